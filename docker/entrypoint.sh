#!/bin/sh
# Write a config on first start, then run the given command (default:
# `homeserver run --config /data/homeserver.yaml`).
#
# Variables (first start only):
#   CONCORD_SERVER_NAME   public server name (required when no config exists)
#   CONCORD_DATABASE_URL  postgresql://... (default: SQLite in the data dir).
#                         May reference ${VARS}: the config loader expands them
#                         at every start, so the password never lands in the file.
#   CONCORD_DATA_DIR      data directory (default /data)
#   CONCORD_CONFIG        config path (default $CONCORD_DATA_DIR/homeserver.yaml)
set -eu

data_dir="${CONCORD_DATA_DIR:-/data}"
config="${CONCORD_CONFIG:-$data_dir/homeserver.yaml}"

if [ ! -f "$config" ]; then
    if [ -z "${CONCORD_SERVER_NAME:-}" ]; then
        echo "concord: no config at $config; set CONCORD_SERVER_NAME to generate one" >&2
        exit 1
    fi
    if [ -n "${CONCORD_DATABASE_URL:-}" ]; then
        homeserver generate-config --server-name "$CONCORD_SERVER_NAME" \
            --data-dir "$data_dir" --output "$config" --bind 0.0.0.0 \
            --database-url "$CONCORD_DATABASE_URL"
    else
        homeserver generate-config --server-name "$CONCORD_SERVER_NAME" \
            --data-dir "$data_dir" --output "$config" --bind 0.0.0.0
    fi
fi

exec "$@"
