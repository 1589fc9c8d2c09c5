-- Tenants, their users, devices and access tokens (docs/usage/tenants.md).
--
-- `tenants` is the node's registry: one row per hosted server name, whether
-- declared in the config (source 'config', re-synced at every start) or
-- created at run time (source 'runtime', this table is their only record).
-- It is read from the node's own database only. Private signing keys never
-- come here: signing_key_path names the key file.
CREATE TABLE tenants (
    server_name TEXT PRIMARY KEY,
    source TEXT NOT NULL,                 -- 'config' | 'runtime'
    mode TEXT NOT NULL,                   -- 'shared' | 'dedicated'
    database_url TEXT,                    -- dedicated mode only
    state TEXT NOT NULL,                  -- 'active' | 'suspended'
    signing_key_path TEXT NOT NULL,
    -- JSON: client_hostnames (list), quotas (object), enable_registration.
    options_json TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);

-- The tables below live in the database the tenant resolves to (the node's
-- in shared mode, its own in dedicated mode); `tenant` scopes every row either
-- way, so a query can never see another tenant's rows by forgetting a WHERE.

-- Local accounts. user_id is the full '@localpart:server_name'.
-- password_hash is bcrypt ('$2b$...'); NULL means password login is off.
CREATE TABLE users (
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    password_hash TEXT,
    admin BIGINT NOT NULL DEFAULT 0,
    deactivated BIGINT NOT NULL DEFAULT 0,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (tenant, user_id)
);

CREATE TABLE devices (
    tenant TEXT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    created_ts BIGINT NOT NULL,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    PRIMARY KEY (tenant, user_id, device_id)
);

-- Access tokens, stored as the hex SHA-256 of the token: a leaked database
-- does not hand out sessions. `id` is a random positive 62-bit integer (the
-- same on both engines without an identity column); clients never see it.
CREATE TABLE access_tokens (
    tenant TEXT NOT NULL,
    id BIGINT NOT NULL,
    token_hash TEXT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE UNIQUE INDEX access_tokens_hash ON access_tokens (tenant, token_hash);
CREATE INDEX access_tokens_user ON access_tokens (tenant, user_id, device_id);

-- Counting a tenant's created rooms for its `max_rooms` quota reads the
-- m.room.create events its users sent.
CREATE INDEX events_tenant_type_sender ON events (tenant, type, sender);
