#!/bin/sh
# service.sh — drive a systemd unit with the primary role (the exec agent for a service
# quorate does not know). Configure it as every hook and set, in the daemon's environment:
#   UNIT           the unit that serves as primary (e.g. "myapp.service")
#   REPLICA_UNIT   optional: the unit that runs on replicas and replicates from the primary
#                  (it reads QUORATE_PRIMARY_SERVICE, host:port of the primary's service,
#                  from systemd's manager environment); without it replicas run nothing
#   FENCE_COMMAND  optional: powers off or isolates the old primary (ipmitool, a cloud CLI);
#                  without it the fence cannot confirm anything, so it fails
#   NOTIFY_COMMAND optional: run for every role change in the cluster (QUORATE_EVENT, ...)
# Actions: start, stop, promote, demote, follow, rejoin, monitor, fence, notify.
set -eu
UNIT=${UNIT:-myapp.service}
REPLICA_UNIT=${REPLICA_UNIT:-}

# The monitor's report (its last stdout line): quorate carries the role in heartbeats.
report() {
    printf '{"role":"%s","healthy":%s}\n' "$1" "$2"
}

case "${QUORATE_HOOK:-}" in
    start)
        # The daemon starts: the service comes up as a replica (only promote makes a primary).
        systemctl stop "$UNIT" || true
        if [ -n "$REPLICA_UNIT" ] && [ -n "${QUORATE_PRIMARY_SERVICE:-}" ]; then
            systemctl set-environment QUORATE_PRIMARY_SERVICE="$QUORATE_PRIMARY_SERVICE"
            systemctl start "$REPLICA_UNIT"
        fi
        ;;
    stop)
        # The daemon stops gracefully, after handing over: nothing of the service stays up.
        systemctl stop "$UNIT" || true
        if [ -n "$REPLICA_UNIT" ]; then
            systemctl stop "$REPLICA_UNIT" || true
        fi
        ;;
    promote)
        # QUORATE_EPOCH is the fencing token: pass it to the service so stale writers can be
        # rejected (e.g. write it where the app checks it before accepting writes).
        systemctl set-environment QUORATE_EPOCH="${QUORATE_EPOCH:-0}"
        if [ -n "$REPLICA_UNIT" ]; then
            systemctl stop "$REPLICA_UNIT"
        fi
        systemctl start "$UNIT"
        ;;
    demote)
        systemctl stop "$UNIT"
        ;;
    follow | rejoin)
        # A replica re-points at the new primary (follow: after every primary change; rejoin:
        # a former primary coming back, the place to resync the service's own data first,
        # pg_rewind-style). The primary's unit must not run here.
        systemctl stop "$UNIT" || true
        if [ -n "$REPLICA_UNIT" ]; then
            if [ -z "${QUORATE_PRIMARY_SERVICE:-}" ]; then
                echo "service.sh $QUORATE_HOOK: no service address for primary node ${QUORATE_PRIMARY:-?}: set service = \"HOST:PORT\" in that node's [[peer]] section" >&2
                exit 1
            fi
            systemctl set-environment QUORATE_PRIMARY_SERVICE="$QUORATE_PRIMARY_SERVICE"
            systemctl restart "$REPLICA_UNIT"
        fi
        ;;
    monitor)
        if [ "${QUORATE_ROLE:-}" = primary ]; then
            systemctl is-active --quiet "$UNIT"
            report primary true
        elif [ -n "$REPLICA_UNIT" ]; then
            systemctl is-active --quiet "$REPLICA_UNIT"
            report replica true
        else
            report stopped true
        fi
        ;;
    fence)
        # Power off or isolate node $QUORATE_FENCE_TARGET through your fencing device: set
        # FENCE_COMMAND (e.g. an ipmitool or cloud CLI call); its exit status is the fence's.
        # Without one the fence cannot confirm anything, so it fails.
        if [ -z "${FENCE_COMMAND:-}" ]; then
            echo "fence node ${QUORATE_FENCE_TARGET:-?}: no fencing device configured (set FENCE_COMMAND in service.sh's environment)" >&2
            exit 1
        fi
        if ! sh -c "$FENCE_COMMAND"; then
            echo "fence node ${QUORATE_FENCE_TARGET:-?}: FENCE_COMMAND failed: $FENCE_COMMAND" >&2
            exit 1
        fi
        ;;
    notify)
        if [ -n "${NOTIFY_COMMAND:-}" ]; then
            sh -c "$NOTIFY_COMMAND"
        fi
        ;;
    *)
        echo "service.sh: unknown action '${QUORATE_HOOK:-}' (expected start, stop, promote, demote, follow, rejoin, monitor, fence or notify): is this script configured for a newer quorate?" >&2
        exit 2
        ;;
esac
