#!/bin/sh
# vip.sh — move a virtual IP with the primary. Configure as promote, demote and fence hook:
#   [resource]
#   promote = "/etc/quorate/hooks/vip.sh"
#   demote  = "/etc/quorate/hooks/vip.sh"
# Environment: QUORATE_HOOK (promote|demote|fence|monitor|rejoin), QUORATE_EPOCH, ...
# Settings (edit here or export from a drop-in): VIP (address/prefix) and DEV (interface).
set -eu
VIP=${VIP:-192.0.2.10/24}
DEV=${DEV:-eth0}
addr=${VIP%/*}

case "${QUORATE_HOOK:-}" in
    promote)
        ip addr replace "$VIP" dev "$DEV"
        # Tell the LAN the address moved (gratuitous ARP), so clients stop using the old MAC.
        if command -v arping >/dev/null 2>&1; then
            arping -q -U -c 3 -I "$DEV" "$addr" || true
        fi
        ;;
    demote|rejoin)
        ip addr del "$VIP" dev "$DEV" 2>/dev/null || true
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
        # Fencing a VIP means making sure the old node dropped it: ask its out-of-band
        # controller (IPMI, cloud API) here. Exit non-zero if that cannot be confirmed.
        exit 0
        ;;
esac
