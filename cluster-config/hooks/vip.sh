#!/bin/sh
# vip.sh — move a virtual IP with the primary. Configure as promote, demote, follow and fence
# hook (and monitor, to check the address is where it belongs):
#   [resource]
#   promote = "/etc/quorate/hooks/vip.sh"
#   demote  = "/etc/quorate/hooks/vip.sh"
#   follow  = "/etc/quorate/hooks/vip.sh"
#   fence   = "/etc/quorate/hooks/vip.sh"
# Environment: QUORATE_HOOK (start|stop|promote|demote|follow|rejoin|monitor|fence|notify),
# QUORATE_EPOCH, ...
# Settings (edit here or export from a drop-in): VIP (address/prefix) and DEV (interface);
# FENCE_COMMAND (optional): a command that powers off or isolates the old primary through its
# out-of-band controller (IPMI, cloud API); the fence runs it first and it must succeed.
# The fence needs arping from iputils (Debian: iputils-arping); ping (iputils-ping) is used too
# when present.
set -eu
VIP=${VIP:-192.0.2.10/24}
DEV=${DEV:-eth0}
addr=${VIP%/*}

# A fence that cannot confirm must fail: quorate then does not promote (fencing = "required")
# or says so (best-effort). Exit 0 only once the address is confirmed free.
fence_fail() {
    echo "vip.sh fence of node ${QUORATE_FENCE_TARGET:-?}: $*; cannot confirm the old primary released $addr" >&2
    exit 1
}

case "${QUORATE_HOOK:-}" in
    promote)
        ip addr replace "$VIP" dev "$DEV"
        # Tell the LAN the address moved (gratuitous ARP), so clients stop using the old MAC.
        if command -v arping >/dev/null 2>&1; then
            arping -q -U -c 3 -I "$DEV" "$addr" || true
        fi
        ;;
    start | stop | demote | rejoin | follow)
        # A replica never holds the address (follow runs on every replica after every
        # primary change: a node that missed its demote lets go here).
        ip addr del "$VIP" dev "$DEV" 2>/dev/null || true
        ;;
    notify)
        # The address follows the primary through promote and demote; nothing to tell.
        ;;
    monitor)
        # Primary: the address must be present. Replicas: it must be absent.
        if [ "${QUORATE_ROLE:-}" = primary ]; then
            ip -o addr show dev "$DEV" | grep -q " $addr/"
        else
            ! ip -o addr show dev "$DEV" | grep -q " $addr/"
        fi
        ;;
    fence)
        # Make sure the old primary dropped the address before this node takes it: first
        # the operator's out-of-band fence (FENCE_COMMAND), then the LAN itself: nobody may
        # answer ARP for the address (duplicate address detection) nor ping.
        if [ -n "${FENCE_COMMAND:-}" ]; then
            if ! sh -c "$FENCE_COMMAND"; then
                fence_fail "FENCE_COMMAND failed: $FENCE_COMMAND"
            fi
        fi
        if ! command -v ip >/dev/null 2>&1; then
            fence_fail "ip (iproute2) is not installed"
        fi
        if ip -o addr show dev "$DEV" 2>/dev/null | grep -q " $addr/"; then
            fence_fail "$addr is already configured on this node's $DEV, so the LAN cannot tell who else holds it; remove it (ip addr del $VIP dev $DEV) or check the old primary by hand"
        fi
        if ! command -v arping >/dev/null 2>&1; then
            fence_fail "arping is not installed (Debian: apt-get install iputils-arping)"
        fi
        if ! arping -V 2>&1 | grep -q iputils; then
            fence_fail "$(command -v arping) is not iputils' arping (duplicate address detection needs iputils-arping)"
        fi
        rc=0
        arping -D -q -c 3 -w 4 -I "$DEV" "$addr" || rc=$?
        case $rc in
            0) ;;
            1) fence_fail "$addr still answers ARP on $DEV (the old primary or another host holds it)" ;;
            *) fence_fail "arping on $DEV failed (exit $rc); check DEV and the interface" ;;
        esac
        if command -v ping >/dev/null 2>&1 && ping -c 1 -W 1 "$addr" >/dev/null 2>&1; then
            fence_fail "$addr still answers ping"
        fi
        echo "vip.sh fence of node ${QUORATE_FENCE_TARGET:-?}: nobody answers for $addr on $DEV" >&2
        exit 0
        ;;
    *)
        echo "vip.sh: unknown action '${QUORATE_HOOK:-}' (expected start, stop, promote, demote, follow, rejoin, monitor, fence or notify): is this script configured for a newer quorate?" >&2
        exit 2
        ;;
esac
