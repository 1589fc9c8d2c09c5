-- Server signing keys (server-server API "Retrieving server keys").
--
-- remote_server_keys: the keyring's cache of other servers' public keys, one
-- row per (server, key ID), shared by every tenant of the node (a server's
-- keys do not depend on who asks). valid_until_ts is already capped at
-- fetched_ts + 7 days (rooms/fragments/v5-signing-requirements.md);
-- expired_ts is set for keys that came from old_verify_keys. key_json is the
-- signed response the key came from (canonical JSON), served again when we
-- act as a notary.
CREATE TABLE remote_server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    fetched_ts BIGINT NOT NULL,
    key_json TEXT,
    PRIMARY KEY (server_name, key_id)
);

-- local_signing_keys: the public half of every signing key each hosted
-- server name has used, so retired keys keep being published under
-- old_verify_keys after a restart. The private seeds never come here: they
-- stay in the key file.
CREATE TABLE local_signing_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    PRIMARY KEY (server_name, key_id)
);
