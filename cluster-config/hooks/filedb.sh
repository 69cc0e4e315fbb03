#!/bin/sh
# filedb.sh — a tiny replicated "service" whose data is one append-only file, for trying out
# (and testing) quorate's data plane: position-based candidate choice, follow, rejoin.
#
# Configure it as every hook (start, stop, promote, demote, monitor, follow, rejoin, fence,
# notify, snapshot, verify) and set
# FILEDB_ROOT in the daemon's environment: a folder every node can read, holding one
# sub-folder per node (node<ID>/: data, timeline, role, upstream). Clients "write" by
# appending to the primary's node<ID>/data. On one machine (the tests, the demo) the folder is
# shared; across machines, replace the two `cp` lines with rsync from the primary's host
# (QUORATE_PRIMARY_SERVICE says where it is).
#
# What each action does:
#   start     role=replica (the daemon starts; only promote makes a primary)
#   stop      nothing to stop (the daemon stops gracefully)
#   promote   the timeline goes up by one (as PostgreSQL's does at a promotion); role=primary
#   demote    role=replica (the data stays)
#   follow    copy the primary's data and timeline, remember it as upstream; role=replica
#   rejoin    the same as follow (a former primary resyncs from the new one), and lifts a
#             fence of this node
#   monitor   a replica streams from its upstream (unless node<ID>/paused exists: then it
#             writes node<ID>/paused.seen, so whoever paused it knows no copy is in flight), then the
#             node prints its report: {"role","position" (data size in bytes),"timeline"}
#   notify    records the event (QUORATE_EVENT, QUORATE_EVENT_NODE, ...)
#   snapshot  (failback, on the current primary before the cut-over) copies this node's data
#             to node<ID>/snapshot: what an undo could go back to
#   verify    (failback, on home once it is primary) home's data must hold every byte of the
#             previous primary's protective snapshot; fails if node<ID>/verify.fail exists
#             (a test switch: a failed check undoes the failback)
#   fence     filedb can fence for real: it marks the target's folder, and a fenced node's
#             monitor fails until the mark is removed (its data stays intact)
# Every action appends one line to $FILEDB_ROOT/calls.log.
set -eu
root=${FILEDB_ROOT:?set FILEDB_ROOT to the folder that holds the filedb data of every node}
node=${QUORATE_NODE:?QUORATE_NODE is set by quorate}
me="$root/node$node"
mkdir -p "$me"
[ -f "$me/data" ] || : >"$me/data"
[ -f "$me/timeline" ] || echo 1 >"$me/timeline"
[ -f "$me/role" ] || echo replica >"$me/role"

log() {
    printf '%s node=%s primary=%s service=%s epoch=%s reason=%s %s\n' \
        "${QUORATE_HOOK:-?}" "$node" "${QUORATE_PRIMARY:-}" "${QUORATE_PRIMARY_SERVICE:-}" \
        "${QUORATE_EPOCH:-}" "${QUORATE_REASON:-}" "$*" >>"$root/calls.log"
}

# Copies $1's data and timeline over this node's, through temporary files so a reader never
# sees half a copy (named by this process: a monitor may copy while a follow does).
copy_from() {
    src="$root/node$1"
    if [ ! -f "$src/data" ]; then
        echo "filedb: no data of node $1 at $src (is FILEDB_ROOT the same on every node?)" >&2
        exit 1
    fi
    cp "$src/data" "$me/data.tmp.$$" && mv "$me/data.tmp.$$" "$me/data"
    cp "$src/timeline" "$me/timeline.tmp.$$" && mv "$me/timeline.tmp.$$" "$me/timeline"
}

case "${QUORATE_HOOK:-}" in
    start)
        # The daemon starts: the service comes up as a replica (only promote makes a primary).
        echo replica >"$me/role"
        log
        ;;
    stop)
        # The daemon stops gracefully (after its hand-over): nothing runs for filedb.
        log
        ;;
    promote)
        # Through a temp file: a monitor reading the timeline meanwhile never sees it empty.
        echo $(($(cat "$me/timeline") + 1)) >"$me/timeline.tmp.$$" && mv "$me/timeline.tmp.$$" "$me/timeline"
        echo primary >"$me/role"
        rm -f "$me/upstream"
        log "timeline=$(cat "$me/timeline")"
        ;;
    demote)
        echo replica >"$me/role"
        log
        ;;
    follow | rejoin)
        # A rejoin also lifts a fence: once this node's data is the new primary's copy and it
        # serves as a replica, it can no longer act on its own.
        if [ "$QUORATE_HOOK" = rejoin ]; then
            rm -f "$me/fenced"
        fi
        primary=${QUORATE_PRIMARY:-}
        if [ -z "$primary" ]; then
            echo "filedb: $QUORATE_HOOK without QUORATE_PRIMARY: nothing to follow" >&2
            exit 1
        fi
        copy_from "$primary"
        echo "$primary" >"$me/upstream"
        echo replica >"$me/role"
        log "position=$(wc -c <"$me/data" | tr -d ' ')"
        ;;
    monitor)
        if [ -e "$me/fenced" ]; then
            echo "filedb: node $node is fenced (remove $me/fenced to clear)" >&2
            exit 1
        fi
        role=$(cat "$me/role")
        if [ -e "$me/paused" ]; then
            # Acknowledge the pause: once this exists, no copy that began before it is running.
            : >"$me/paused.seen"
        elif [ "$role" = replica ] && [ -f "$me/upstream" ]; then
            up=$(cat "$me/upstream")
            # Stream on the same timeline, and across a timeline switch of the upstream (as a
            # PostgreSQL standby with recovery_target_timeline=latest does); never back to an
            # older timeline (that data diverged: it needs a follow or rejoin).
            theirs=$(cat "$root/node$up/timeline" 2>/dev/null || echo 0)
            if [ "$theirs" -ge "$(cat "$me/timeline")" ]; then
                copy_from "$up"
            fi
        fi
        printf '{"role":"%s","position":%s,"timeline":%s,"healthy":true}\n' \
            "$role" "$(wc -c <"$me/data" | tr -d ' ')" "$(cat "$me/timeline")"
        ;;
    notify)
        # A role change somewhere in the cluster: a real service would page, update DNS or
        # a load balancer here. filedb only records it.
        log "event=${QUORATE_EVENT:-} event_node=${QUORATE_EVENT_NODE:-} event_epoch=${QUORATE_EVENT_EPOCH:-} event_role=${QUORATE_EVENT_ROLE:-}"
        ;;
    snapshot)
        cp "$me/data" "$me/snapshot.tmp.$$" && mv "$me/snapshot.tmp.$$" "$me/snapshot"
        log "position=$(wc -c <"$me/snapshot" | tr -d ' ')"
        ;;
    verify)
        if [ -e "$me/verify.fail" ]; then
            echo "filedb: verify refused by $me/verify.fail (remove it to let verify pass)" >&2
            log "result=failed"
            exit 1
        fi
        prev=${QUORATE_PREVIOUS_PRIMARY:-}
        snap="$root/node$prev/snapshot"
        if [ -n "$prev" ] && [ -f "$snap" ]; then
            size=$(wc -c <"$snap" | tr -d ' ')
            if ! cmp -s -n "$size" "$snap" "$me/data"; then
                echo "filedb: node $node's data does not hold the $size bytes of node $prev's protective snapshot" >&2
                log "result=failed"
                exit 1
            fi
            log "result=ok checked=$size"
        else
            log "result=ok checked=0"
        fi
        ;;
    fence)
        target=${QUORATE_FENCE_TARGET:?}
        mkdir -p "$root/node$target"
        : >"$root/node$target/fenced"
        log "target=$target"
        ;;
    *)
        echo "filedb: unknown hook ${QUORATE_HOOK:-} (expected start, stop, promote, demote, follow, rejoin, monitor, notify, snapshot, verify or fence)" >&2
        exit 2
        ;;
esac
