#!/usr/bin/env bash
# Run a command with a PostgreSQL server that answers, exported as
# CONCORD_TEST_POSTGRES_URL (a maintenance database; tests create their own
# throwaway databases on it).
#
# Uses the server at 127.0.0.1:5432 when it answers (or the URL already in
# CONCORD_TEST_POSTGRES_URL); otherwise starts a throwaway cluster in a temp
# dir with initdb/pg_ctl and stops it afterwards. Never skips.
# CONCORD_PG_PROBE_HOST / CONCORD_PG_PROBE_PORT change the address probed
# (tests point it at a closed port to exercise the throwaway cluster).
set -u

probe_host=${CONCORD_PG_PROBE_HOST:-127.0.0.1}
probe_port=${CONCORD_PG_PROBE_PORT:-5432}

probe() {
    # $1 = host, $2 = port
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$1" -p "$2" -t 3
    else
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
    fi
}

if [ -n "${CONCORD_TEST_POSTGRES_URL:-}" ]; then
    exec "$@"
fi

if probe "$probe_host" "$probe_port"; then
    export CONCORD_TEST_POSTGRES_URL="postgresql://postgres@$probe_host:$probe_port/postgres"
    exec "$@"
fi

INITDB=$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -n 1)
PG_CTL=$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | tail -n 1)
if [ -z "$INITDB" ] || [ -z "$PG_CTL" ]; then
    echo "with-postgres: no PostgreSQL answers at $probe_host:$probe_port and no initdb/pg_ctl is installed" >&2
    exit 1
fi

tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# initdb refuses to run as root; run the cluster as the postgres user then.
as_pg=()
if [ "$(id -u)" = 0 ]; then
    if id postgres >/dev/null 2>&1; then
        as_pg=(runuser -u postgres --)
    else
        as_pg=(runuser -u nobody --)
    fi
    chown "$(echo "${as_pg[2]}")" "$tmp"
fi
echo "with-postgres: starting a throwaway cluster in $tmp on port $port" >&2
"${as_pg[@]}" "$INITDB" -D "$tmp/data" -U postgres -A trust >/dev/null || exit 1
"${as_pg[@]}" "$PG_CTL" -D "$tmp/data" -o "-p $port -k $tmp -c listen_addresses=127.0.0.1" -w -l "$tmp/log" start >/dev/null || { cat "$tmp/log" >&2; exit 1; }
cleanup() {
    "${as_pg[@]}" "$PG_CTL" -D "$tmp/data" -m fast -w stop >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
export CONCORD_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/postgres"
"$@"
exit $?
