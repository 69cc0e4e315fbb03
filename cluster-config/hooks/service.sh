#!/bin/sh
# service.sh — drive a systemd unit with the primary role. Configure it as every hook and set
# UNIT (e.g. "postgresql@16-main.service" or your app's unit).
set -eu
UNIT=${UNIT:-myapp.service}

case "${QUORATE_HOOK:-}" in
    promote)
        # QUORATE_EPOCH is the fencing token: pass it to the service so stale writers can be
        # rejected (e.g. write it where the app checks it before accepting writes).
        systemctl set-environment QUORATE_EPOCH="${QUORATE_EPOCH:-0}"
        systemctl start "$UNIT"
        ;;
    demote)
        systemctl stop "$UNIT"
        ;;
    monitor)
        if [ "${QUORATE_ROLE:-}" = primary ]; then
            systemctl is-active --quiet "$UNIT"
        fi
        ;;
    rejoin)
        # A former primary coming back: resync the service's own data here (pg_rewind-style)
        # before it serves as a replica.
        systemctl stop "$UNIT" || true
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
esac
