#!/usr/bin/env bash
# What the test suite needs besides .venv: PostgreSQL (127.0.0.1:5432, trust auth, or SPARSEGRAD_TEST_PG),
# Redis (127.0.0.1:6379, or SPARSEGRAD_TEST_REDIS), Debian's chromium (the dashboard's browser tests) and jemalloc
# (libjemalloc2, which training workers preload). Starts what is installed but down and, as root with apt, installs
# chromium, jemalloc and the servers; otherwise
# stops at once and prints the one command that provides what is missing. `make test` runs it first.
set -uo pipefail

missing=()
as_root() { [ "$(id -u)" = 0 ]; }
apt_install() {
    as_root && command -v apt-get >/dev/null || return 1
    echo "installing $* (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1; }
}

if [ -z "${SPARSEGRAD_TEST_PG:-}" ] && ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    if ! command -v pg_ctlcluster >/dev/null && apt_install postgresql; then
        # a cluster this script created for the tests: let user postgres in from 127.0.0.1 without a password
        hba="$(ls /etc/postgresql/*/main/pg_hba.conf | head -1)"
        sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
    fi
    if command -v pg_ctlcluster >/dev/null && as_root; then
        echo "starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start 2>/dev/null
        for _ in $(seq 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
    fi
    pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null || missing+=("PostgreSQL on 127.0.0.1:5432 with trust auth for user postgres (or SPARSEGRAD_TEST_PG=postgresql+psycopg://USER:PASSWORD@HOST:PORT)")
fi

if [ -z "${SPARSEGRAD_TEST_REDIS:-}" ] && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    command -v redis-server >/dev/null || apt_install redis-server redis-tools
    if command -v redis-server >/dev/null; then
        echo "starting Redis"
        dir="${TMPDIR:-/tmp}/sparsegrad-test-redis"
        mkdir -p "$dir"
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
            --dir "$dir" --logfile "$dir/redis.log"
        for _ in $(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
    fi
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || missing+=("Redis on 127.0.0.1:6379 (apt-get install redis-server; or SPARSEGRAD_TEST_REDIS=redis://HOST:PORT)")
fi

if [ ! -x /usr/bin/chromium ]; then
    apt_install chromium
    [ -x /usr/bin/chromium ] || missing+=("Debian's chromium at /usr/bin/chromium (sudo apt-get install -y chromium)")
fi

has_jemalloc() { /sbin/ldconfig -p 2>/dev/null | grep -q 'libjemalloc\.so'; }
if ! has_jemalloc; then
    apt_install libjemalloc2
    has_jemalloc || missing+=("jemalloc, which training workers preload (sudo apt-get install -y libjemalloc2)")
fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "The tests need, and this script could not provide:" >&2
    for item in "${missing[@]}"; do echo "  - $item" >&2; done
    echo "Provide them (as root, 'sudo bash scripts/test_prerequisites.sh' installs and starts them with apt), then run 'make test' again." >&2
    exit 1
fi
echo "test prerequisites: PostgreSQL, Redis, chromium and jemalloc are ready"
