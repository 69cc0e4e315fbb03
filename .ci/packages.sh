#!/usr/bin/env bash
# Installs the Debian packages the tests use, when missing (root with apt-get only; otherwise
# it names what is missing and the command that installs it). Sourced by .ci/test.
#   procps                         pgrep in the example scripts
#   iproute2 nftables              the network-namespace tests (root)
#   iputils-arping iputils-ping    vip.sh's fence
#   postgresql-15                  the postgres agent's tests (initdb, pg_ctl, pg_basebackup,
#                                  pg_rewind under /usr/lib/postgresql/15/bin)
quorate_install_packages() {
    local need="" pkg
    for pkg in procps iproute2 nftables iputils-arping iputils-ping postgresql-15; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
    done
    [ -n "$need" ] || return 0
    if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "warning: missing packages:$need; install them (sudo apt-get install$need) or the tests that need them fail" >&2
        return 0
    fi
    # The tests start their own PostgreSQL instances: the package must not create and start
    # a cluster of its own.
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
    fi
    apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need || echo "warning: could not install:$need" >&2
}
