#!/usr/bin/env bash
# shellcheck disable=SC2016 # single-quoted scripts get their values as arguments
# tests/e2e/nspawn.sh — quorate under real systemd: three systemd-nspawn containers, one node each.
#
# What it proves (each check prints PASS or FAIL; the script exits 1 on any failure):
#   verify     `systemd-analyze verify` accepts cluster-config/systemd/quorate.service
#   config     `quorate config check` accepts each container's generated config
#   active     all three quorate.service units reach active (Type=notify: READY=1 was sent)
#   primary    exactly one node answers GET /primary with 200, and every node names it
#   kill9      kill -9 of the primary's daemon: systemd restarts it and another node takes over
#   watchdog   SIGSTOP of the primary's daemon: the systemd watchdog kills and restarts it,
#              never two primaries meanwhile, exactly one afterwards
#   stop       `systemctl stop quorate` on the primary: it demotes, another node promotes after
#              that, the unit stops with Result=success
#   rejoin     the stopped node starts again and rejoins as a replica; still one primary
#   reload     `systemctl reload quorate` applies a [log] level change in place (same MainPID),
#              refuses a [storage] change (restart-only), and reloads the original file
#   pg-start   the cluster again with the postgres agent under the shipped unit plus
#              cluster-config/systemd/quorate.service.d/postgres.conf, from empty data dirs:
#              the primary runs initdb, both replicas clone it and stream (pg_stat_replication)
#   pg-stop    `systemctl stop quorate` on the PostgreSQL primary: another node promotes, a
#              row committed before is there, the stopped node's postmaster is gone
#   pg-rejoin  the stopped node starts again, rewinds if needed and streams from the new primary
#
# How: a minimal Debian root filesystem made by debootstrap (cached under
# ${TMPDIR:-/tmp}/quorate-e2e-rootfs, rebuilt when missing or broken) boots three times with
# `systemd-nspawn --volatile=overlay` (the cache is never written), on a bridge inside a private
# network namespace with no route out (10.231.0.0/24; the host side of the namespace is .1, the
# nodes .11-.13). The release binary, the unit, the configs and the marker hook are bind-mounted
# read-only. The host drives the nodes with `nsenter -t <container init> -a systemctl ...` and
# talks to their APIs with curl inside the namespace.
#
# Run as root on a Debian host: tests/e2e/nspawn.sh   (.ci/run calls it)
# Environment knobs:
#   QUORATE_BIN=PATH          use this binary instead of building target/release/quorate
#   QUORATE_E2E_ROOTFS=DIR    rootfs cache (default ${TMPDIR:-/tmp}/quorate-e2e-rootfs)
#   QUORATE_E2E_MIRROR=URL    Debian mirror for debootstrap (default: the first of this host's apt
#                             sources that serves $SUITE, read from /etc/apt at run time)
#   QUORATE_E2E_KEEP=1        keep the work dir (configs, console logs) after the run (the
#                             next run deletes it)
# Runtime: 15-20 s with a cached rootfs and an up-to-date release binary; the first debootstrap
# adds about 1.5 minutes, a release build of quorate whatever cargo needs. Every wait is bounded.
set -Eeuo pipefail

# ---- constants ------------------------------------------------------------------------------
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
readonly REPO
readonly NETNS=qe2e
readonly NETNS_PATH=/run/netns/$NETNS
readonly BRIDGE=qe2ebr0
readonly SUBNET=10.231.0
readonly HOST_ADDR=$SUBNET.1
readonly NODES=(1 2 3)
readonly API_PORT=7401 RAFT_PORT=7411 HEARTBEAT_PORT=7421
readonly ROOTFS=${QUORATE_E2E_ROOTFS:-${TMPDIR:-/tmp}/quorate-e2e-rootfs}
# Bump when the rootfs recipe below changes: an older cache is rebuilt.
readonly ROOTFS_RECIPE=4
# procps: the unit's ExecReload uses /bin/kill (procps on Debian; every normal install has it).
# postgresql-15: the postgres agent's checks (its default cluster is removed from the image).
readonly ROOTFS_PACKAGES=systemd,systemd-sysv,dbus,iproute2,curl,procps,postgresql-15
readonly PG_BIN=/usr/lib/postgresql/15/bin
readonly PG_PORT=5432
MIRROR=${QUORATE_E2E_MIRROR:-}
readonly LOCK_FILE=/run/lock/quorate-e2e.lock
# Short watchdog for the test (the shipped unit says 10s); the daemon feeds it every half.
readonly WATCHDOG_SEC=4
# Bounds, in seconds.
readonly DEBOOTSTRAP_TIMEOUT=900
readonly BOOT_TIMEOUT=40
readonly START_TIMEOUT=60
readonly PRIMARY_TIMEOUT=30
readonly FAILOVER_TIMEOUT=30
readonly RESTART_TIMEOUT=30
readonly WATCHDOG_TIMEOUT=$((WATCHDOG_SEC + 30))
readonly STOP_TIMEOUT=75
readonly CONTAINER_STOP_TIMEOUT=15
readonly HTTP_TIMEOUT=1
# initdb, two base backups and the first streaming, on a loaded machine.
readonly PG_TIMEOUT=180

# The suite must match the host's: the binary is built here and bind-mounted in (glibc).
# shellcheck disable=SC1091
SUITE=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
SUITE=${SUITE:-bookworm}

T0=$SECONDS
WORK=""
FAILURES=0
SKIP_REST=0
declare -A NSPAWN_PID=() INIT_PID=()

# ---- output ---------------------------------------------------------------------------------
log() { printf '[e2e %3ds] %s\n' $((SECONDS - T0)) "$*"; }
pass() { printf '[e2e %3ds] PASS %-9s %s\n' $((SECONDS - T0)) "$1" "$2"; }
fail() {
    printf '[e2e %3ds] FAIL %-9s %s\n' $((SECONDS - T0)) "$1" "$2" >&2
    FAILURES=$((FAILURES + 1))
    SKIP_REST=1
}
# A broken environment (not a failed check): say what and stop.
die() {
    printf '[e2e %3ds] ERROR %s\n' $((SECONDS - T0)) "$*" >&2
    FAILURES=$((FAILURES + 1))
    exit 2
}

# ---- cgroups --------------------------------------------------------------------------------
# With no systemd on the host (--keep-unit, --register=no) nspawn needs its own cgroup: one
# directory per container in the named `systemd` v1 hierarchy and the v2 `unified` one (hybrid
# layout), or in /sys/fs/cgroup itself on a pure v2 host.
cgroup_roots() {
    if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
        echo /sys/fs/cgroup
        return
    fi
    local h
    for h in systemd unified; do
        if [ -d "/sys/fs/cgroup/$h" ]; then echo "/sys/fs/cgroup/$h"; fi
    done
}

machine() { echo "qe2e-n$1"; }

# Kills every process left in our cgroup directories (they are ours: we created them) and
# removes the directories, deepest first.
remove_cgroups() {
    local n root dir pid
    for n in "${NODES[@]}"; do
        for root in $(cgroup_roots); do
            dir=$root/$(machine "$n")
            [ -d "$dir" ] || continue
            for _ in 1 2 3 4 5 6 7 8 9 10; do
                local pids
                pids=$(find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u || true)
                if [ -z "$pids" ]; then break; fi
                for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
                sleep 0.2
            done
            find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true
            if [ -d "$dir" ]; then log "warning: could not remove cgroup $dir"; fi
        done
    done
}

# ---- container control ----------------------------------------------------------------------
# Runs a command inside node $1's container (all of its namespaces, its root).
cexec() {
    local n=$1
    shift
    nsenter -t "${INIT_PID[$n]}" -a -- "$@"
}

stop_containers() {
    local n pid deadline
    for n in "${!NSPAWN_PID[@]}"; do
        kill -TERM "${NSPAWN_PID[$n]}" 2>/dev/null || true
    done
    deadline=$((SECONDS + CONTAINER_STOP_TIMEOUT))
    for n in "${!NSPAWN_PID[@]}"; do
        pid=${NSPAWN_PID[$n]}
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            log "container $(machine "$n") did not stop within ${CONTAINER_STOP_TIMEOUT}s of SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    NSPAWN_PID=()
    INIT_PID=()
}

remove_network() {
    if [ -e "$NETNS_PATH" ]; then
        ip netns delete "$NETNS" 2>/dev/null || log "warning: could not delete network namespace $NETNS"
    fi
}

# Leftovers of a previous run that died without cleaning up (kill -9, power loss).
remove_leftovers() {
    remove_cgroups
    remove_network
    local n
    for n in "${NODES[@]}"; do rm -rf "/run/systemd/nspawn/propagate/$(machine "$n")"; done
    # Work dirs of killed runs (this name pattern is ours; we hold the run lock).
    if [ -z "$WORK" ]; then
        find "${TMPDIR:-/tmp}" -maxdepth 1 -type d -name 'quorate-e2e.??????' -exec rm -rf {} + 2>/dev/null || true
    fi
}

dump_logs() {
    local n
    log "---- diagnostics ----"
    for n in "${NODES[@]}"; do
        [ -n "${WORK:-}" ] || break
        echo "==== $(machine "$n"): console (last 30 lines)"
        tail -n 30 "$WORK/n$n/console.log" 2>/dev/null || true
        if [ -n "${INIT_PID[$n]:-}" ] && kill -0 "${INIT_PID[$n]}" 2>/dev/null; then
            echo "==== $(machine "$n"): systemctl status quorate"
            timeout 10 nsenter -t "${INIT_PID[$n]}" -a -- systemctl --no-pager status quorate 2>&1 | head -n 20 || true
            # openraft logs one line per failed Raft heartbeat (every ~50 ms per unreachable
            # peer): fold those so the rest of the story stays readable.
            echo "==== $(machine "$n"): journalctl -u quorate (last 600 lines, failed-heartbeat lines folded)"
            timeout 10 nsenter -t "${INIT_PID[$n]}" -a -- journalctl --no-pager -o short-monotonic -u quorate -n 600 2>&1 |
                awk '/failed to send a heartbeat/ { folded++; next }
                     { if (folded) { print "    (" folded " failed-heartbeat lines)"; folded = 0 } print }
                     END { if (folded) print "    (" folded " failed-heartbeat lines)" }' | tail -n 200 || true
            echo "==== $(machine "$n"): marker log (hooks other than monitor)"
            timeout 10 nsenter -t "${INIT_PID[$n]}" -a -- cat /var/lib/quorate/hooks.log 2>/dev/null | grep -v ' monitor ' | tail -n 40 || true
        fi
    done
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [ "$rc" -ne 0 ] || [ "$FAILURES" -ne 0 ]; then
        dump_logs
    fi
    stop_containers
    remove_leftovers
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "${QUORATE_E2E_KEEP:-}" = 1 ]; then
            log "kept the work dir $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    if [ "$rc" -eq 0 ] && [ "$FAILURES" -ne 0 ]; then rc=1; fi
    if [ "$rc" -eq 0 ]; then
        log "all checks passed in $((SECONDS - T0))s"
    elif [ "$rc" -eq 130 ] || [ "$rc" -eq 143 ]; then
        log "interrupted (exit $rc) after $((SECONDS - T0))s; cleaned up"
    else
        log "FAILED ($FAILURES failure(s), exit $rc) after $((SECONDS - T0))s"
    fi
    exit "$rc"
}

# ---- preflight ------------------------------------------------------------------------------
preflight() {
    [ "$(id -u)" = 0 ] || die "must run as root (it creates a network namespace, cgroups and containers)"
    command -v apt-get >/dev/null || die "needs a Debian host with apt-get"
    local need="" pkg cmd
    for pair in debootstrap:debootstrap systemd-nspawn:systemd-container curl:curl jq:jq \
        nsenter:util-linux ip:iproute2 flock:util-linux systemd-analyze:systemd pgrep:procps; do
        cmd=${pair%%:*}
        pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || need="$need $pkg"
    done
    if [ -n "$need" ]; then
        log "installing:$need"
        apt-get update -qq || log "warning: apt-get update failed; trying the install anyway"
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null ||
            die "apt-get install$need failed; install them by hand and re-run"
    fi
    [ -n "$(cgroup_roots)" ] || die "no usable cgroup hierarchy under /sys/fs/cgroup (need the named 'systemd' v1 hierarchy plus 'unified', or pure cgroup v2)"
}

# ---- build ----------------------------------------------------------------------------------
build_binary() {
    if [ -n "${QUORATE_BIN:-}" ]; then
        BIN=$QUORATE_BIN
    else
        log "cargo build --release -p quorate"
        # CARGO_BUILD_JOBS etc. come from the caller's environment.
        (cd "$REPO" && cargo build --release -q -p quorate) ||
            die "cargo build --release -p quorate failed"
        BIN=$REPO/target/release/quorate
    fi
    [ -x "$BIN" ] || die "quorate binary $BIN is missing or not executable"
    "$BIN" --version >/dev/null 2>&1 || "$BIN" --help >/dev/null 2>&1 || die "$BIN does not run on this host"
}

# ---- root filesystem ------------------------------------------------------------------------
rootfs_ok() {
    local r=$1 f
    [ "$(cat "$r/.quorate-e2e-recipe" 2>/dev/null)" = "$ROOTFS_RECIPE $SUITE $ROOTFS_PACKAGES" ] || return 1
    for f in usr/lib/systemd/systemd usr/bin/systemctl usr/bin/dbus-daemon usr/sbin/ip usr/bin/curl bin/kill bin/sh \
        "${PG_BIN#/}/initdb" "${PG_BIN#/}/pg_rewind" "${PG_BIN#/}/psql"; do
        [ -x "$r/$f" ] || return 1
    done
    chroot "$r" /bin/sh -c 'systemctl --version >/dev/null && ip -V >/dev/null && curl --version >/dev/null' \
        >/dev/null 2>&1 || return 1
}

# The Debian mirror this host's apt uses for $SUITE (deb822 .sources or one-line lists), so
# the test names no mirror of its own.
host_apt_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v suite="$SUITE" '
            function flush() { if (uris != "" && index(" " suites " ", " " suite " ") && !done) { split(uris, u, " "); print u[1]; done = 1 } uris = ""; suites = "" }
            /^[[:space:]]*$/ { flush(); next }
            /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); uris = $0 }
            /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
            END { flush() }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v suite="$SUITE" '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i + 1) == suite) print $i }' "$f"
    done
}

ensure_rootfs() {
    if [ -z "$MIRROR" ]; then
        MIRROR=$(host_apt_mirror | head -n 1)
    fi
    if rootfs_ok "$ROOTFS"; then
        log "reusing the cached root filesystem $ROOTFS"
        return
    fi
    if [ -e "$ROOTFS" ]; then log "cached root filesystem $ROOTFS is missing, stale or broken: rebuilding it"; fi
    rm -rf "$ROOTFS" "$ROOTFS".partial.*
    local tmp=$ROOTFS.partial.$$
    mkdir -p "$(dirname "$ROOTFS")"
    [ -n "$MIRROR" ] || die "no apt source on this host serves $SUITE (looked in /etc/apt/sources.list and /etc/apt/sources.list.d): set QUORATE_E2E_MIRROR to a Debian mirror URL"
    log "debootstrap $SUITE into $tmp (about a minute)"
    if ! timeout "$DEBOOTSTRAP_TIMEOUT" debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" \
        "$SUITE" "$tmp" "$MIRROR" >"$tmp.log" 2>&1; then
        tail -n 30 "$tmp.log" >&2
        rm -rf "$tmp"
        die "debootstrap $SUITE from $MIRROR failed or took over ${DEBOOTSTRAP_TIMEOUT}s (log above)"
    fi
    rm -f "$tmp.log"
    # Boot only what the test needs: no gettys, no apt/fstrim timers. The hostname comes from
    # nspawn (machine name), the machine id from a per-container bind mount.
    rm -f "$tmp"/etc/systemd/system/getty.target.wants/* \
        "$tmp"/etc/systemd/system/timers.target.wants/* \
        "$tmp"/etc/systemd/system/multi-user.target.wants/e2scrub_reap.service \
        "$tmp"/etc/hostname
    ln -sf /dev/null "$tmp/etc/systemd/system/console-getty.service"
    # The per-container machine id is a read-only bind mount: nothing to commit.
    ln -sf /dev/null "$tmp/etc/systemd/system/systemd-machine-id-commit.service"
    # The package made a default cluster (15/main on port 5432) and enabled its unit: quorate's
    # agent runs PostgreSQL itself, so neither may exist in the image.
    rm -rf "$tmp"/etc/postgresql/15/main "$tmp"/var/lib/postgresql/15/main
    ln -sf /dev/null "$tmp/etc/systemd/system/postgresql.service"
    rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
    echo "$ROOTFS_RECIPE $SUITE $ROOTFS_PACKAGES" >"$tmp/.quorate-e2e-recipe"
    rootfs_ok "$tmp" || { rm -rf "$tmp"; die "the freshly built root filesystem fails its own sanity check"; }
    mv "$tmp" "$ROOTFS"
}

# ---- per-node files -------------------------------------------------------------------------
node_addr() { echo "$SUBNET.$((10 + $1))"; }

# Node $1's [node] (priority $2) and [listen] sections.
node_and_listen() {
    local addr
    addr=$(node_addr "$1")
    echo '[node]'
    echo "id = $1"
    echo 'role = "voter"'
    echo "priority = $2"
    echo
    echo '[listen]'
    echo "raft = \"$addr:$RAFT_PORT\""
    echo "heartbeat = \"$addr:$HEARTBEAT_PORT\""
    echo "api = \"$addr:$API_PORT\""
}

# Node $1's [[peer]] entry (addresses only; callers append more keys).
peer_entry() {
    echo
    echo '[[peer]]'
    echo "id = $1"
    echo 'role = "voter"'
    echo "raft = \"$(node_addr "$1"):$RAFT_PORT\""
    echo "heartbeat = [\"$(node_addr "$1"):$HEARTBEAT_PORT\"]"
    echo "api = \"$(node_addr "$1"):$API_PORT\""
}

write_node_files() {
    local n=$1 d=$WORK/n$1 addr m
    addr=$(node_addr "$n")
    mkdir -p "$d/etc/hooks" "$d/unit.d"
    install -m 0755 "$REPO/cluster-config/local/hooks/marker.sh" "$d/etc/hooks/marker.sh"
    install -m 0600 "$WORK/secret" "$d/etc/secret"
    {
        echo "# generated by tests/e2e/nspawn.sh for node $n"
        echo 'cluster = "e2e"'
        echo 'data_dir = "/var/lib/quorate"'
        echo 'profile = "lan"'
        echo 'secret_file = "/etc/quorate/secret"'
        echo
        node_and_listen "$n" 100
        echo
        echo '[resource]'
        for hook in promote demote monitor fence rejoin; do
            echo "$hook = \"/etc/quorate/hooks/marker.sh\""
        done
        echo 'failure_threshold = 3'
        echo 'fencing = "best-effort"'
        for m in "${NODES[@]}"; do peer_entry "$m"; done
    } >"$d/etc/quorate.toml"

    # The container's address: a oneshot the quorate unit requires (no networkd, no waiting).
    cat >"$d/e2e-net.service" <<EOF
[Unit]
Description=quorate e2e: address $addr/24 on host0
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/ip link set host0 up
ExecStart=/usr/sbin/ip addr replace $addr/24 dev host0
EOF
    cat >"$d/unit.d/e2e.conf" <<EOF
# tests/e2e/nspawn.sh: the address first, a short watchdog, and the marker hook's log.
[Unit]
Requires=e2e-net.service
After=e2e-net.service
[Service]
WatchdogSec=${WATCHDOG_SEC}s
Environment=QUORATE_MARKER_LOG=/var/lib/quorate/hooks.log
EOF
    printf '%032x\n' "$((0x5e2e0000 + n))" >"$d/machine-id"
}

# ---- network --------------------------------------------------------------------------------
create_network() {
    ip netns add "$NETNS" || die "ip netns add $NETNS failed"
    ip -n "$NETNS" link set lo up
    ip -n "$NETNS" link add "$BRIDGE" type bridge forward_delay 0 ||
        die "cannot create bridge $BRIDGE in network namespace $NETNS"
    ip -n "$NETNS" addr add "$HOST_ADDR/24" dev "$BRIDGE"
    ip -n "$NETNS" link set "$BRIDGE" up
    # No default route in the namespace: nothing leaves it.
}

# curl inside the namespace; prints the HTTP code (000 when unreachable or hung).
http_code() {
    nsenter --net="$NETNS_PATH" -- curl -s -o /dev/null -w '%{http_code}' \
        --max-time "$HTTP_TIMEOUT" "http://$(node_addr "$1"):$API_PORT$2" 2>/dev/null || true
}
status_json() {
    nsenter --net="$NETNS_PATH" -- curl -s --max-time "$HTTP_TIMEOUT" \
        "http://$(node_addr "$1"):$API_PORT/v1/status" 2>/dev/null || true
}
# One field of node $1's /v1/status, empty when unreachable.
status_field() { status_json "$1" | jq -r ".$2 // empty" 2>/dev/null || true; }

# ---- containers -----------------------------------------------------------------------------
boot_container() {
    local n=$1 m d root procs=() pid child deadline comm
    m=$(machine "$n")
    d=$WORK/n$n
    for root in $(cgroup_roots); do
        mkdir -p "$root/$m" || die "cannot create cgroup $root/$m"
        procs+=("$root/$m/cgroup.procs")
    done
    local cmd=(systemd-nspawn -b --register=no --keep-unit --volatile=overlay
        --network-bridge="$BRIDGE" --machine="$m" --console=read-only -D "$ROOTFS"
        --bind-ro="$BIN:/usr/local/bin/quorate"
        --bind-ro="$d/etc:/etc/quorate"
        --bind-ro="$REPO/cluster-config/systemd/quorate.service:/etc/systemd/system/quorate.service"
        --bind-ro="$d/unit.d:/etc/systemd/system/quorate.service.d"
        --bind-ro="$d/e2e-net.service:/etc/systemd/system/e2e-net.service"
        --bind-ro="$d/machine-id:/etc/machine-id")
    # The shell joins the cgroups, then execs nsenter (network namespace) which execs nspawn:
    # $! is the nspawn process. setsid keeps a terminal's Ctrl-C for us (cleanup stops it);
    # fd 9 (the run lock) is closed so a container orphaned by a killed run cannot hold it.
    setsid bash -c 'ns=$1 n=$2; shift 2; for ((i = 0; i < n; i++)); do echo $$ >"$1"; shift; done; exec nsenter --net="$ns" -- "$@"' \
        _ "$NETNS_PATH" "${#procs[@]}" "${procs[@]}" "${cmd[@]}" >"$d/console.log" 2>&1 </dev/null 9>&- &
    pid=$!
    NSPAWN_PID[$n]=$pid
    # Container init: nspawn's child whose PID in its own namespace is 1, once it is systemd.
    deadline=$((SECONDS + BOOT_TIMEOUT))
    while [ $SECONDS -lt $deadline ]; do
        kill -0 "$pid" 2>/dev/null || break
        for child in $(pgrep -P "$pid" 2>/dev/null || true); do
            comm=$(cat "/proc/$child/comm" 2>/dev/null || true)
            if [ "$comm" = systemd ] && grep -qE '^NSpid:.*[[:space:]]1$' "/proc/$child/status" 2>/dev/null; then
                INIT_PID[$n]=$child
                return 0
            fi
        done
        sleep 0.1
    done
    tail -n 20 "$d/console.log" >&2
    die "container $m did not start systemd within ${BOOT_TIMEOUT}s (console log above)"
}

wait_booted() {
    local n=$1 state="" deadline left
    deadline=$((SECONDS + BOOT_TIMEOUT))
    # Until the container's systemd listens on its private socket, systemctl cannot connect
    # and prints nothing: try again. Once connected, --wait blocks until boot finished.
    while left=$((deadline - SECONDS)) && [ $left -gt 0 ]; do
        state=$(timeout "$left" nsenter -t "${INIT_PID[$n]}" -a -- systemctl is-system-running --wait 2>/dev/null || true)
        case $state in running | degraded | maintenance | stopping | offline) break ;; esac
        sleep 0.2
    done
    case $state in
        running) ;;
        degraded)
            log "note: $(machine "$n") booted degraded; failed units: $(cexec "$n" systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')"
            ;;
        *)
            tail -n 20 "$WORK/n$n/console.log" >&2
            die "container $(machine "$n") did not finish booting within ${BOOT_TIMEOUT}s (state '$state'; console log above)"
            ;;
    esac
}

unit_prop() { cexec "$1" systemctl show -p "$2" --value quorate.service 2>/dev/null || true; }

# ---- cluster observations -------------------------------------------------------------------
# Nodes answering /primary with 200, space-separated (empty when none). One curl queries all
# nodes in parallel, so a sample is close to one instant.
primaries() {
    local args=() n
    for n in "${NODES[@]}"; do args+=(-o /dev/null "http://$(node_addr "$n"):$API_PORT/primary"); done
    nsenter --net="$NETNS_PATH" -- curl -s --parallel --parallel-immediate --max-time "$HTTP_TIMEOUT" \
        -w '%{http_code} %{url_effective}\n' "${args[@]}" 2>/dev/null |
        awk -v net="$SUBNET." '$1 == 200 { split($2, a, "/"); split(a[3], h, ":"); sub(net, "", h[1]); print h[1] - 10 }' |
        sort -n | tr '\n' ' ' | sed 's/ $//' || true
}

# Samples /primary on every node and records in $WORK/samples how many nodes acted as
# primary at once (a file, not a variable: the samplers run in subshells); prints the
# primaries. Sampling is not atomic: during a hand-over the old primary may answer just
# before and the new one just after the change. So a sample with two is taken again at once
# and only nodes answering 200 in both samples count as simultaneous.
sample_primaries() {
    local p again both n
    p=$(primaries)
    if [ "$(wc -w <<<"$p")" -gt 1 ]; then
        again=$(primaries)
        both=0
        for n in $p; do grep -qw "$n" <<<"$again" && both=$((both + 1)); done
        echo "$both $p / $again" >>"$WORK/samples"
        if [ "$both" -gt 1 ]; then log "two primaries: sample '$p', again '$again'" >&2; fi
    else
        wc -w <<<"$p" >>"$WORK/samples"
    fi
    echo "$p"
}
reset_samples() { : >"$WORK/samples"; }
# The most nodes ever seen answering /primary 200 at the same time since reset_samples.
max_simultaneous() { awk '$1 > m { m = $1 } END { print m + 0 }' "$WORK/samples" 2>/dev/null || echo 0; }

# Waits until exactly one node (other than $2, if given) is primary with epoch > $3 (default
# 0) and every running node's /v1/status names it; prints "<node> <epoch>".
wait_single_primary() {
    local timeout=$1 not=${2:-0} min_epoch=${3:-0} deadline p epoch n agree named
    deadline=$((SECONDS + timeout))
    while [ $SECONDS -lt $deadline ]; do
        p=$(sample_primaries)
        if [ -n "$p" ] && [ "$(wc -w <<<"$p")" = 1 ] && [ "$p" != "$not" ]; then
            epoch=$(status_field "$p" epoch)
            if [ -n "$epoch" ] && [ "$epoch" -gt "$min_epoch" ]; then
                agree=1
                for n in "${NODES[@]}"; do
                    if [ "$n" = "$p" ]; then continue; fi
                    [ "$(unit_prop "$n" ActiveState)" = active ] || continue
                    named=$(status_field "$n" primary)
                    [ "$named" = "$p" ] || agree=0
                done
                if [ $agree = 1 ]; then
                    echo "$p $epoch"
                    return 0
                fi
            fi
        fi
        sleep 0.3
    done
    return 1
}

describe_cluster() {
    local n
    for n in "${NODES[@]}"; do
        printf 'node %s: unit=%s /primary=%s status=%s\n' "$n" "$(unit_prop "$n" ActiveState)" \
            "$(http_code "$n" /primary)" \
            "$(status_json "$n" | jq -c '{primary, epoch, raft_state, leader_id, local_role}' 2>/dev/null || echo unreachable)"
    done
}

# Marker lines "<ns> <node> <event> <epoch>" of node $1 after line $2.
marker_lines() { cexec "$1" sh -c "tail -n +$(($2 + 1)) /var/lib/quorate/hooks.log 2>/dev/null" || true; }
marker_count() { cexec "$1" sh -c 'wc -l 2>/dev/null </var/lib/quorate/hooks.log || echo 0' 2>/dev/null || echo 0; }

# ---- checks ---------------------------------------------------------------------------------
check_verify() {
    # A copy under another name, so the test's drop-ins are not part of what is verified.
    local out
    if out=$(cexec 1 sh -c 'cp /etc/systemd/system/quorate.service /run/quorate-verify.service &&
            systemd-analyze verify /run/quorate-verify.service; rc=$?; rm -f /run/quorate-verify.service; exit $rc' 2>&1) &&
        ! grep -q . <<<"$out"; then
        pass verify "systemd-analyze verify accepts cluster-config/systemd/quorate.service"
    else
        fail verify "systemd-analyze verify of cluster-config/systemd/quorate.service: ${out:-non-zero exit}"
    fi
}

check_config() {
    local n out ok=1
    for n in "${NODES[@]}"; do
        if ! out=$(cexec "$n" quorate config check /etc/quorate/quorate.toml 2>&1); then
            fail config "quorate config check rejects node $n's generated config: $out"
            ok=0
        fi
    done
    if [ $ok = 1 ]; then pass config "quorate config check accepts the three generated configs"; fi
}

# Starts quorate.service on every node at once and waits; a node whose start fails or whose
# unit is not active/running afterwards fails check $1 (start output in $WORK/n<N>/$2).
# Returns 1 when any failed.
start_all_units() {
    local check=$1 logname=$2 n pids=() rc ok=0 state
    for n in "${NODES[@]}"; do
        # Type=notify: `systemctl start` returns only once the daemon sent READY=1.
        timeout "$START_TIMEOUT" nsenter -t "${INIT_PID[$n]}" -a -- systemctl start quorate.service \
            >"$WORK/n$n/$logname" 2>&1 &
        pids[n]=$!
    done
    for n in "${NODES[@]}"; do
        rc=0
        wait "${pids[$n]}" || rc=$?
        state="$(unit_prop "$n" ActiveState)/$(unit_prop "$n" SubState)"
        if [ $rc -ne 0 ] || [ "$state" != active/running ]; then
            fail "$check" "node $n: systemctl start quorate exited $rc (124 = no READY=1 within ${START_TIMEOUT}s), unit $state: $(cat "$WORK/n$n/$logname")"
            ok=1
        fi
    done
    return $ok
}

check_active() {
    local n
    start_all_units active start.log || return 0
    local statuses="" type
    for n in "${NODES[@]}"; do
        type=$(unit_prop "$n" Type)
        if [ "$type" != notify ]; then
            fail active "node $n: quorate.service has Type=$type, expected notify"
            return
        fi
        statuses="$statuses [$n: $(unit_prop "$n" StatusText)]"
    done
    pass active "all three quorate.service units active/running after READY=1; STATUS=$statuses"
}

check_primary() {
    local r
    if r=$(wait_single_primary "$PRIMARY_TIMEOUT"); then
        # Stable: a second look a moment later sees the same single primary.
        sleep 1
        local again
        again=$(sample_primaries)
        if [ "$again" = "${r%% *}" ]; then
            pass primary "exactly one primary: node ${r%% *} at epoch ${r#* } (every node agrees)"
        else
            fail primary "primary not stable: node ${r%% *} then '$again'"
        fi
    else
        fail primary "no single agreed primary within ${PRIMARY_TIMEOUT}s: $(describe_cluster | tr '\n' ';')"
    fi
}

# Waits until node $1's unit runs a new main process (not $2) with NRestarts above $3.
wait_restarted() {
    local n=$1 old_pid=$2 old_restarts=$3 deadline pid restarts state
    deadline=$((SECONDS + RESTART_TIMEOUT))
    while [ $SECONDS -lt $deadline ]; do
        pid=$(unit_prop "$n" MainPID)
        restarts=$(unit_prop "$n" NRestarts)
        state=$(unit_prop "$n" ActiveState)
        if [ "${restarts:-0}" -gt "$old_restarts" ] && [ "${pid:-0}" != 0 ] && [ "$pid" != "$old_pid" ] &&
            [ "$state" = active ]; then
            echo "MainPID $old_pid -> $pid, NRestarts $old_restarts -> $restarts"
            return 0
        fi
        sample_primaries >/dev/null
        sleep 0.3
    done
    echo "MainPID $old_pid -> ${pid:-?}, NRestarts $old_restarts -> ${restarts:-?}, state ${state:-?}"
    return 1
}

check_kill9() {
    local p e0 pid0 nr0 r restart
    read -r p e0 <<<"$(wait_single_primary "$PRIMARY_TIMEOUT")" || true
    [ -n "${p:-}" ] || { fail kill9 "no single primary to kill: $(describe_cluster | tr '\n' ';')"; return; }
    pid0=$(unit_prop "$p" MainPID)
    nr0=$(unit_prop "$p" NRestarts)
    reset_samples
    log "kill -9 of node $p's quorate (MainPID $pid0 in its container), epoch $e0"
    cexec "$p" sh -c 'kill -KILL "$1"' _ "$pid0" || { fail kill9 "could not kill -9 MainPID $pid0 on node $p"; return; }
    if ! r=$(wait_single_primary "$FAILOVER_TIMEOUT" "$p" "$e0"); then
        fail kill9 "no other node became primary with an epoch above $e0 within ${FAILOVER_TIMEOUT}s: $(describe_cluster | tr '\n' ';')"
        return
    fi
    if ! restart=$(wait_restarted "$p" "$pid0" "$nr0"); then
        fail kill9 "systemd did not restart node $p's daemon within ${RESTART_TIMEOUT}s: $restart"
        return
    fi
    # The restarted node must come back as a replica of the new primary.
    local r2
    if ! r2=$(wait_single_primary "$FAILOVER_TIMEOUT" "$p" "$e0"); then
        fail kill9 "after node $p restarted there is no single agreed primary: $(describe_cluster | tr '\n' ';')"
        return
    fi
    local most
    most=$(max_simultaneous)
    if [ "$most" -gt 1 ]; then
        fail kill9 "saw $most nodes answering /primary 200 at once"
        return
    fi
    pass kill9 "node $p killed: failover to node ${r%% *} (epoch $e0 -> ${r#* }); systemd restarted it ($restart); it rejoined, primary node ${r2%% *}"
}

watchdog_timeouts() { cexec "$1" journalctl --no-pager -o cat -u quorate.service 2>/dev/null | grep -c 'Watchdog timeout' || true; }

check_watchdog() {
    local p e0 pid0 nr0 wd0 wd1 restart r
    read -r p e0 <<<"$(wait_single_primary "$PRIMARY_TIMEOUT")" || true
    [ -n "${p:-}" ] || { fail watchdog "no single primary to hang: $(describe_cluster | tr '\n' ';')"; return; }
    pid0=$(unit_prop "$p" MainPID)
    nr0=$(unit_prop "$p" NRestarts)
    wd0=$(watchdog_timeouts "$p")
    local wd_usec
    wd_usec=$(unit_prop "$p" WatchdogUSec)
    if [ "$wd_usec" != "${WATCHDOG_SEC}s" ]; then
        fail watchdog "node $p: WatchdogUSec=$wd_usec, expected ${WATCHDOG_SEC}s from the test's drop-in"
        return
    fi
    reset_samples
    log "SIGSTOP of node $p's quorate (MainPID $pid0), epoch $e0, WatchdogSec=${WATCHDOG_SEC}s"
    cexec "$p" sh -c 'kill -STOP "$1"' _ "$pid0" || { fail watchdog "could not SIGSTOP MainPID $pid0 on node $p"; return; }
    local deadline=$((SECONDS + WATCHDOG_TIMEOUT))
    # wait_restarted has its own bound; first let the watchdog fire.
    while [ $SECONDS -lt $deadline ] && [ "$(unit_prop "$p" NRestarts)" = "$nr0" ]; do
        sample_primaries >/dev/null
        sleep 0.3
    done
    if ! restart=$(wait_restarted "$p" "$pid0" "$nr0"); then
        cexec "$p" sh -c 'kill -CONT "$1"' _ "$pid0" 2>/dev/null || true
        fail watchdog "the hung daemon on node $p was not restarted within $((WATCHDOG_TIMEOUT + RESTART_TIMEOUT))s: $restart"
        return
    fi
    wd1=$(watchdog_timeouts "$p")
    if [ "$wd1" -le "$wd0" ]; then
        fail watchdog "node $p restarted ($restart) but its journal shows no new 'Watchdog timeout'"
        return
    fi
    if ! r=$(wait_single_primary "$FAILOVER_TIMEOUT"); then
        fail watchdog "no single agreed primary after the watchdog restart: $(describe_cluster | tr '\n' ';')"
        return
    fi
    local most
    most=$(max_simultaneous)
    if [ "$most" -gt 1 ]; then
        fail watchdog "saw $most nodes answering /primary 200 at once while node $p hung"
        return
    fi
    pass watchdog "node $p hung: systemd watchdog fired ('Watchdog timeout' in its journal) and restarted it ($restart); never two primaries; primary now node ${r%% *} at epoch ${r#* } (was $e0)"
}

STOPPED_NODE=""
PG_STOPPED_NODE=""
check_stop() {
    local p e0 q e1 r rc result state status_code l0 demote_ns promote_ns
    read -r p e0 <<<"$(wait_single_primary "$PRIMARY_TIMEOUT")" || true
    [ -n "${p:-}" ] || { fail stop "no single primary to stop: $(describe_cluster | tr '\n' ';')"; return; }
    l0=$(marker_count "$p")
    declare -A lq0
    for q in "${NODES[@]}"; do lq0[$q]=$(marker_count "$q"); done
    reset_samples
    log "systemctl stop quorate on primary node $p, epoch $e0"
    # Sample /primary while the stop runs, so a moment with two primaries would be seen.
    (
        while :; do
            sample_primaries >/dev/null
            sleep 0.2
        done
    ) &
    local sampler=$!
    rc=0
    timeout "$STOP_TIMEOUT" nsenter -t "${INIT_PID[$p]}" -a -- systemctl stop quorate.service >"$WORK/stop.log" 2>&1 || rc=$?
    STOPPED_NODE=$p
    if ! r=$(wait_single_primary "$FAILOVER_TIMEOUT" "$p" "$e0"); then
        kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
        fail stop "no other node promoted within ${FAILOVER_TIMEOUT}s after stopping node $p: $(describe_cluster | tr '\n' ';')"
        return
    fi
    kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
    read -r q e1 <<<"$r"
    result=$(unit_prop "$p" Result)
    state=$(unit_prop "$p" ActiveState)
    status_code=$(unit_prop "$p" ExecMainStatus)
    if [ $rc -ne 0 ] || [ "$result" != success ] || [ "$state" != inactive ]; then
        fail stop "node $p: systemctl stop exited $rc (124 = over ${STOP_TIMEOUT}s), Result=$result, ActiveState=$state, exit status $status_code: $(cat "$WORK/stop.log")"
        return
    fi
    local most
    most=$(max_simultaneous)
    if [ "$most" -gt 1 ]; then
        fail stop "saw $most nodes answering /primary 200 at once during the hand-over"
        return
    fi
    # Order: the stopped primary's demote hook started before the new primary's promote hook
    # (both stamp CLOCK_MONOTONIC, one clock for all containers of this machine).
    demote_ns=$(marker_lines "$p" "$l0" | awk -v n="$p" '$2 == n && $3 == "demote" { print $1; exit }' || true)
    promote_ns=$(marker_lines "$q" "${lq0[$q]}" | awk -v n="$q" -v e="$e1" '$2 == n && $3 == "promote" && $4 == e { print $1; exit }' || true)
    if [ -z "$demote_ns" ]; then
        fail stop "node $p stopped but ran no demote hook (marker log since the stop: $(marker_lines "$p" "$l0" | { grep -v monitor || true; } | tr '\n' ';'))"
        return
    fi
    if [ -z "$promote_ns" ]; then
        fail stop "node $q is primary at epoch $e1 but its marker log has no 'promote $e1' since the stop: $(marker_lines "$q" "${lq0[$q]}" | { grep -v monitor || true; } | tr '\n' ';')"
        return
    fi
    if [ "$demote_ns" -ge "$promote_ns" ]; then
        fail stop "node $q promoted (t=$promote_ns ns) before node $p demoted (t=$demote_ns ns)"
        return
    fi
    pass stop "systemctl stop on primary node $p: demoted first, node $q promoted $(((promote_ns - demote_ns) / 1000000)) ms later (epoch $e0 -> $e1); unit stopped with Result=success, exit status $status_code"
}

check_rejoin() {
    local p=$STOPPED_NODE rc=0 r
    [ -n "$p" ] || { fail rejoin "no stopped node to start again"; return; }
    timeout "$START_TIMEOUT" nsenter -t "${INIT_PID[$p]}" -a -- systemctl start quorate.service >"$WORK/rejoin.log" 2>&1 || rc=$?
    if [ $rc -ne 0 ]; then
        fail rejoin "systemctl start quorate on node $p exited $rc: $(cat "$WORK/rejoin.log")"
        return
    fi
    # Give it time to catch up, then: still one primary, not the rejoined node, and it agrees.
    local deadline=$((SECONDS + FAILOVER_TIMEOUT)) named=""
    while [ $SECONDS -lt $deadline ]; do
        r=$(wait_single_primary 5 "$p") || true
        named=$(status_field "$p" primary)
        if [ -n "$r" ] && [ "$named" = "${r%% *}" ]; then break; fi
        sleep 0.3
    done
    if [ -n "${r:-}" ] && [ "$named" = "${r%% *}" ]; then
        pass rejoin "node $p started again and follows primary node ${r%% *} (epoch ${r#* })"
    else
        fail rejoin "node $p started again but the cluster has no single agreed primary: $(describe_cluster | tr '\n' ';')"
    fi
}

# `systemctl reload quorate` (ExecReload: SIGHUP) on a running node: a [log] level change is
# applied in place (same MainPID), a [storage] change is refused as a whole (it needs a
# restart), and the original file reloads cleanly. The outcome is read from the node's status.
wait_reload_outcome() {
    local n=$1 before=$2 deadline=$((SECONDS + 15)) out=""
    while [ $SECONDS -lt $deadline ]; do
        out=$(status_field "$n" last_reload)
        if [ -n "$out" ] && [ "$out" != "$before" ]; then
            echo "$out"
            return 0
        fi
        sleep 0.2
    done
    echo "${out:-none}"
    return 1
}

check_reload() {
    local n=1 conf="$WORK/n1/etc/quorate.toml" original pid0 pid1 out before rc=0
    original=$(cat "$conf")
    pid0=$(unit_prop "$n" MainPID)
    before=$(status_field "$n" last_reload)
    printf '%s\n\n[log]\nlevel = "debug"\n' "$original" >"$conf"
    timeout 20 nsenter -t "${INIT_PID[$n]}" -a -- systemctl reload quorate.service || rc=$?
    if [ $rc -ne 0 ]; then
        printf '%s\n' "$original" >"$conf"
        fail reload "systemctl reload quorate on node $n exited $rc"
        return
    fi
    if ! out=$(wait_reload_outcome "$n" "$before") || [[ $out != "reloaded: log.level"* ]]; then
        printf '%s\n' "$original" >"$conf"
        fail reload "node $n: expected 'reloaded: log.level', status says: $out"
        return
    fi
    before=$out
    printf '%s\n\n[storage]\nsnapshot_every = 777\n' "$original" >"$conf"
    nsenter -t "${INIT_PID[$n]}" -a -- systemctl reload quorate.service || true
    out=$(wait_reload_outcome "$n" "$before") || true
    printf '%s\n' "$original" >"$conf"
    if [[ $out != *"reload refused"*"storage"* ]]; then
        fail reload "node $n: a [storage] change must be refused, status says: $out"
        return
    fi
    before=$out
    nsenter -t "${INIT_PID[$n]}" -a -- systemctl reload quorate.service || true
    out=$(wait_reload_outcome "$n" "$before") || true
    pid1=$(unit_prop "$n" MainPID)
    if [[ $out != "reloaded: log.level"* ]] || [ "$pid0" != "$pid1" ] || [ "$(unit_prop "$n" ActiveState)" != active ]; then
        fail reload "node $n: after restoring the file: '$out', MainPID $pid0 -> $pid1, $(unit_prop "$n" ActiveState)"
        return
    fi
    pass reload "systemctl reload on node $n: log level applied in place (MainPID $pid1 kept), a [storage] change refused, the original file reloaded"
}

run_check() {
    if [ "$SKIP_REST" = 1 ]; then
        printf '[e2e %3ds] SKIP %-9s (an earlier check failed)\n' $((SECONDS - T0)) "$1"
        return
    fi
    "check_$1"
}

# ---- PostgreSQL -----------------------------------------------------------------------------
# Node $1's config for the postgres agent (same addresses and secret as the first cluster).
write_pg_node_files() {
    local n=$1 d=$WORK/n$1 m
    install -m 0600 "$WORK/pg-superuser.pw" "$d/etc/pg-superuser.pw"
    install -m 0600 "$WORK/pg-replication.pw" "$d/etc/pg-replication.pw"
    {
        echo "# generated by tests/e2e/nspawn.sh for node $n (postgres agent)"
        echo 'cluster = "e2e-pg"'
        echo 'data_dir = "/var/lib/quorate"'
        echo 'secret_file = "/etc/quorate/secret"'
        echo
        node_and_listen "$n" $((100 - n))
        echo
        # Calm timings: initdb's and the base backups' fsyncs share the disk with Raft's.
        echo '[timing]'
        echo 'heartbeat_interval = "100ms"'
        echo 'suspect_after = "300ms"'
        echo 'dead_after = "600ms"'
        echo 'raft_heartbeat = "100ms"'
        echo 'election_timeout_min = "1s"'
        echo 'election_timeout_max = "2s"'
        echo 'lease = "800ms"'
        echo
        echo '[resource]'
        echo 'agent = "postgres"'
        echo 'monitor_interval = "1s"'
        echo 'failure_threshold = 3'
        echo 'fencing = "best-effort"'
        echo
        echo '[postgres]'
        echo 'data_dir = "/var/lib/postgresql/15/quorate"'
        echo "bin_dir = \"$PG_BIN\""
        echo "port = $PG_PORT"
        echo 'listen = "*"'
        echo 'os_user = "postgres"'
        echo 'superuser = "postgres"'
        echo 'superuser_password_file = "/etc/quorate/pg-superuser.pw"'
        echo 'replication_user = "replicator"'
        echo 'replication_password_file = "/etc/quorate/pg-replication.pw"'
        echo 'synchronous = "quorum"'
        for m in "${NODES[@]}"; do
            peer_entry "$m"
            echo "service = \"$(node_addr "$m"):$PG_PORT\""
            # Every file must give every member the same priority: a node ranks its peers by
            # its own file, and two files that disagree make two leaders each hand leadership
            # to the other without end (seen here before this line existed).
            echo "priority = $((100 - m))"
        done
    } >"$d/etc/quorate.toml"
    # The shipped drop-in, as an operator installs it.
    install -m 0644 "$REPO/cluster-config/systemd/quorate.service.d/postgres.conf" "$d/unit.d/postgres.conf"
}

# SQL on node $1's PostgreSQL as the superuser over TCP; prints the rows (psql -At).
pg_sql() {
    cexec "$1" sh -c 'PGPASSWORD=$(cat /etc/quorate/pg-superuser.pw) PGCONNECT_TIMEOUT=3 "$1/psql" -h 127.0.0.1 -p "$2" -U postgres -d postgres -At -c "$3"' \
        _ "$PG_BIN" "$PG_PORT" "$2" 2>&1
}

# The ids in node $1's e2e table, comma-separated (after running SQL $2 first, when given).
pg_rows() { pg_sql "$1" "${2:-}SELECT string_agg(id::text, ',' ORDER BY id) FROM e2e" | tail -n 1; }

# Standbys streaming from node $1 (pg_stat_replication), or empty when it does not answer.
pg_streaming() { pg_sql "$1" "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'" 2>/dev/null | grep -E '^[0-9]+$' || true; }

# Waits until node $1's PostgreSQL has $2 streaming standbys.
wait_pg_streaming() {
    local n=$1 want=$2 deadline got=""
    deadline=$((SECONDS + PG_TIMEOUT))
    while [ $SECONDS -lt $deadline ]; do
        got=$(pg_streaming "$n")
        [ "$got" = "$want" ] && return 0
        sleep 1
    done
    echo "${got:-no answer}"
    return 1
}

# The postmaster of node $1 (its PID from postmaster.pid inside the container), or empty.
pg_postmaster() {
    cexec "$1" sh -c 'pid=$(head -n 1 /var/lib/postgresql/15/quorate/postmaster.pid 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"' 2>/dev/null || true
}

check_pg-start() {
    local n p e0 got
    for n in "${NODES[@]}"; do
        cexec "$n" systemctl stop quorate.service >/dev/null 2>&1 || true
    done
    for n in "${NODES[@]}"; do
        # A new cluster from empty data dirs (the overlay keeps nothing of the image's).
        cexec "$n" sh -c 'rm -rf /var/lib/quorate/* /var/lib/postgresql/15/quorate /var/lib/postgresql/15/quorate.log'
        write_pg_node_files "$n"
        cexec "$n" systemctl daemon-reload
        if ! cexec "$n" quorate config check /etc/quorate/quorate.toml >"$WORK/n$n/pg-check.log" 2>&1; then
            fail pg-start "quorate config check rejects node $n's postgres config: $(cat "$WORK/n$n/pg-check.log")"
            return
        fi
    done
    start_all_units pg-start pg-start.log || return 0
    read -r p e0 <<<"$(wait_single_primary "$PG_TIMEOUT")" || true
    [ -n "${p:-}" ] || { fail pg-start "no single PostgreSQL primary within ${PG_TIMEOUT}s: $(describe_cluster | tr '\n' ';')"; return; }
    if ! got=$(wait_pg_streaming "$p" 2); then
        fail pg-start "node $p is primary but $got standbys stream from it after ${PG_TIMEOUT}s (want 2)"
        return
    fi
    got=$(pg_sql "$p" "CREATE TABLE e2e (id int PRIMARY KEY, note text); INSERT INTO e2e VALUES (1, 'before the stop'); SELECT epoch FROM quorate.fencing" | tail -n 1)
    if [ "$got" != "$e0" ]; then
        fail pg-start "node $p: quorate.fencing says epoch '$got', quorate says $e0"
        return
    fi
    local owner
    owner=$(cexec "$p" stat -c %U /var/lib/postgresql/15/quorate 2>/dev/null || true)
    pass pg-start "postgres agent under the shipped unit + postgres.conf drop-in: node $p primary (epoch $e0, fencing table agrees), 2 standbys streaming, data dir owned by $owner"
}

check_pg-stop() {
    local p e0 q e1 r rc result pm got
    read -r p e0 <<<"$(wait_single_primary "$PRIMARY_TIMEOUT")" || true
    [ -n "${p:-}" ] || { fail pg-stop "no single primary: $(describe_cluster | tr '\n' ';')"; return; }
    pm=$(pg_postmaster "$p")
    log "systemctl stop quorate on PostgreSQL primary node $p (postmaster ${pm:-?}), epoch $e0"
    rc=0
    timeout "$STOP_TIMEOUT" nsenter -t "${INIT_PID[$p]}" -a -- systemctl stop quorate.service >"$WORK/pg-stop.log" 2>&1 || rc=$?
    PG_STOPPED_NODE=$p
    if ! r=$(wait_single_primary "$PG_TIMEOUT" "$p" "$e0"); then
        fail pg-stop "no other node promoted within ${PG_TIMEOUT}s after stopping node $p: $(describe_cluster | tr '\n' ';')"
        return
    fi
    read -r q e1 <<<"$r"
    result=$(unit_prop "$p" Result)
    if [ $rc -ne 0 ] || [ "$result" != success ]; then
        fail pg-stop "node $p: systemctl stop exited $rc, Result=$result: $(cat "$WORK/pg-stop.log")"
        return
    fi
    if [ -n "$(pg_postmaster "$p")" ]; then
        fail pg-stop "node $p's quorate stopped but its postmaster still runs (the agent's stop action did not stop PostgreSQL)"
        return
    fi
    got=$(pg_rows "$q" "INSERT INTO e2e VALUES (2, 'after the stop'); ")
    if [ "$got" != "1,2" ]; then
        fail pg-stop "new primary node $q: rows '$got', want 1,2 (the row committed before the stop is missing or the insert failed)"
        return
    fi
    pass pg-stop "systemctl stop on PostgreSQL primary node $p: node $q promoted (epoch $e0 -> $e1) with the earlier row, writable; node $p's postmaster stopped, Result=success"
}

check_pg-rejoin() {
    local p=${PG_STOPPED_NODE:-} q e got rc
    [ -n "$p" ] || { fail pg-rejoin "pg-stop left no stopped node"; return; }
    read -r q e <<<"$(wait_single_primary "$PRIMARY_TIMEOUT")" || true
    [ -n "${q:-}" ] || { fail pg-rejoin "no single primary: $(describe_cluster | tr '\n' ';')"; return; }
    rc=0
    timeout "$START_TIMEOUT" nsenter -t "${INIT_PID[$p]}" -a -- systemctl start quorate.service >"$WORK/pg-rejoin.log" 2>&1 || rc=$?
    if [ $rc -ne 0 ]; then
        fail pg-rejoin "node $p: systemctl start quorate exited $rc: $(cat "$WORK/pg-rejoin.log")"
        return
    fi
    if ! got=$(wait_pg_streaming "$q" 2); then
        fail pg-rejoin "node $p restarted but primary node $q has $got streaming standbys after ${PG_TIMEOUT}s (want 2)"
        return
    fi
    got=$(pg_rows "$p")
    if [ "$got" != "1,2" ]; then
        fail pg-rejoin "node $p streams from node $q but shows rows '$got', want 1,2"
        return
    fi
    pass pg-rejoin "node $p started again as a standby of node $q (epoch $e): 2 standbys streaming, node $p has both rows"
}

# ---- main -----------------------------------------------------------------------------------
main() {
    preflight
    mkdir -p "$(dirname "$LOCK_FILE")"
    exec 9>"$LOCK_FILE"
    flock -w 30 9 || die "another run of tests/e2e/nspawn.sh holds $LOCK_FILE"
    trap cleanup EXIT
    # set -e stops on an unexpected error: say where, so it is not a silent exit 1.
    trap 'printf "[e2e %3ds] ERROR unexpected failure (exit %s) at line %s: %s\n" $((SECONDS - T0)) "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR
    trap 'exit 130' INT
    trap 'exit 143' TERM
    remove_leftovers
    build_binary
    ensure_rootfs

    WORK=$(mktemp -d "${TMPDIR:-/tmp}/quorate-e2e.XXXXXX")
    chmod 0755 "$WORK"
    "$BIN" secret generate --out "$WORK/secret" >/dev/null || die "quorate secret generate --out failed"
    local n
    for n in "${NODES[@]}"; do write_node_files "$n"; done

    create_network
    for n in "${NODES[@]}"; do boot_container "$n"; done
    for n in "${NODES[@]}"; do wait_booted "$n"; done
    log "three containers booted: $(for n in "${NODES[@]}"; do printf '%s(init %s) ' "$(machine "$n")" "${INIT_PID[$n]}"; done)"

    run_check verify
    SKIP_REST=0 # verify is independent of the cluster checks
    run_check config
    run_check active
    run_check primary
    run_check kill9
    run_check watchdog
    run_check stop
    run_check rejoin
    run_check reload
    SKIP_REST=0 # the PostgreSQL cluster is a new cluster
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/pg-superuser.pw"
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/pg-replication.pw"
    run_check pg-start
    run_check pg-stop
    run_check pg-rejoin
}

main "$@"
