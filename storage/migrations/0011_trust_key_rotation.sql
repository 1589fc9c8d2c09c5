-- Trust domain and signing-key rotation (docs/usage/trust_domain.md,
-- docs/usage/key_rotation.md).
--
-- local_signing_keys.revoked_ts: set by `homeserver keys revoke`. A revoked
-- key is never published again (neither in verify_keys nor in
-- old_verify_keys) and never signs; the row stays so its ID is never reused
-- and `homeserver keys list` can show it.
ALTER TABLE local_signing_keys ADD COLUMN revoked_ts BIGINT;

-- trusted_servers_overrides: trust domains set at run time through the admin
-- API, which win over the config file until removed (DELETE). scope '' is
-- the node-wide setting (federation.trusted_servers); any other scope is a
-- tenant's server name. patterns_json is a JSON list of patterns; NULL means
-- open federation for the node scope and "inherit the node-wide setting" for
-- a tenant. Lives in the node's database only.
CREATE TABLE trusted_servers_overrides (
    scope TEXT PRIMARY KEY,
    patterns_json TEXT,
    updated_ts BIGINT NOT NULL
);
