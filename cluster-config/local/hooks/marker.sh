#!/bin/sh
# marker.sh — a stand-in quorate hook that only records that it ran.
#
# Appends one line to the file named by $QUORATE_MARKER_LOG (nothing happens when it is
# unset or empty):
#     <CLOCK_MONOTONIC ns> <node> <event> <epoch>
# - time: $QUORATE_MONOTONIC_NS, which the daemon exports to every hook as the hook's start
#   time on CLOCK_MONOTONIC in nanoseconds (comparable across the nodes of one machine,
#   immune to wall-clock steps). POSIX sh cannot read CLOCK_MONOTONIC itself, so when the
#   variable is missing (script run by hand) it falls back to `date +%s%N`, which is wall
#   clock and must not be compared with monotonic values.
# - node: $QUORATE_NODE ("-" if unset); epoch: $QUORATE_EPOCH ("-" if unset).
# - event: $1 when given, else $QUORATE_HOOK (promote|demote|monitor|fence|rejoin),
#   else "unknown".
#
# Exit status is 0, except for the test switches:
# - monitor exits 1 while the file named by $QUORATE_MONITOR_FAIL_FILE exists;
# - fence exits 1 while the file named by $QUORATE_FENCE_FAIL_FILE exists.
# The line is written before a failing exit, so failed calls are recorded too.
#
# A fence also records its outcome on a second line, `fence_ok` or `fence_failed`, with the
# same time stamp as its start (this script decides its outcome at once, so on the log's clock
# it ends when it starts; a wrapper that sleeps after it delays only what the log cannot
# show). The exclusivity checker releases the fenced holder only on `fence_ok`: a fence that
# failed proves nothing about the old primary.
#
# Data mode (the chaos harness): with $QUORATE_MARKER_DATA naming a folder, the marker also
# plays a tiny replicated service there, one sub-folder per node (node<ID>/: data, timeline,
# role, upstream), so quorate's data plane has real positions to rank:
# - promote: the timeline goes up by one, role=primary; demote: role=replica;
# - follow and rejoin: copy $QUORATE_PRIMARY's data and timeline, stream from it from now on;
# - monitor: the primary takes 64 bytes of "writes"; a replica streams from its upstream
#   (unless node<ID>/paused exists, the harness's replication stall), never back to an older
#   timeline; then the node prints its report ({"role","position","timeline"}) and appends
#   `<ns> <node> <timeline> <position>` to $QUORATE_MARKER_DATA/positions.log.

event=${1:-${QUORATE_HOOK:-unknown}}

# Data mode: see above. Copies go through a temporary file so a reader never sees half.
if [ -n "${QUORATE_MARKER_DATA:-}" ] && [ -n "${QUORATE_NODE:-}" ]; then
    me="$QUORATE_MARKER_DATA/node$QUORATE_NODE"
    mkdir -p "$me"
    [ -f "$me/data" ] || : >"$me/data"
    [ -f "$me/timeline" ] || echo 1 >"$me/timeline"
    [ -f "$me/role" ] || echo replica >"$me/role"
    copy_from() {
        src="$QUORATE_MARKER_DATA/node$1"
        [ -f "$src/data" ] || return 0
        cp "$src/data" "$me/data.tmp.$$" && mv "$me/data.tmp.$$" "$me/data"
        cp "$src/timeline" "$me/timeline.tmp.$$" && mv "$me/timeline.tmp.$$" "$me/timeline"
    }
    case $event in
        promote)
            # Through a temp file: a monitor reading the timeline meanwhile never sees it empty.
            echo $(($(cat "$me/timeline") + 1)) >"$me/timeline.tmp.$$" && mv "$me/timeline.tmp.$$" "$me/timeline"
            echo primary >"$me/role"
            rm -f "$me/upstream"
            ;;
        demote)
            echo replica >"$me/role"
            ;;
        follow | rejoin)
            if [ -n "${QUORATE_PRIMARY:-}" ] && [ "$QUORATE_PRIMARY" != "$QUORATE_NODE" ]; then
                copy_from "$QUORATE_PRIMARY"
                echo "$QUORATE_PRIMARY" >"$me/upstream"
            fi
            echo replica >"$me/role"
            ;;
        monitor)
            role=$(cat "$me/role")
            if [ "$role" = primary ]; then
                printf '%064d' 0 >>"$me/data"
            elif [ -f "$me/upstream" ] && [ ! -e "$me/paused" ]; then
                up=$(cat "$me/upstream")
                theirs=$(cat "$QUORATE_MARKER_DATA/node$up/timeline" 2>/dev/null || echo 0)
                if [ "$theirs" -ge "$(cat "$me/timeline")" ]; then
                    copy_from "$up"
                fi
            fi
            position=$(wc -c <"$me/data" | tr -d ' ')
            timeline=$(cat "$me/timeline")
            printf '%s %s %s %s\n' "${QUORATE_MONOTONIC_NS:-$(date +%s%N)}" "$QUORATE_NODE" \
                "$timeline" "$position" >>"$QUORATE_MARKER_DATA/positions.log"
            printf '{"role":"%s","position":%s,"timeline":%s}\n' "$role" "$position" "$timeline"
            ;;
    esac
fi

rc=0
case $event in
    monitor)
        if [ -n "${QUORATE_MONITOR_FAIL_FILE:-}" ] && [ -e "$QUORATE_MONITOR_FAIL_FILE" ]; then
            rc=1
        fi
        ;;
    fence)
        if [ -n "${QUORATE_FENCE_FAIL_FILE:-}" ] && [ -e "$QUORATE_FENCE_FAIL_FILE" ]; then
            rc=1
        fi
        ;;
esac

if [ -n "${QUORATE_MARKER_LOG:-}" ]; then
    now=${QUORATE_MONOTONIC_NS:-$(date +%s%N)}
    # One short printf to a file opened for append: a single write, so lines from
    # concurrent hooks on several nodes do not interleave.
    printf '%s %s %s %s\n' "$now" "${QUORATE_NODE:--}" "$event" "${QUORATE_EPOCH:--}" \
        >>"$QUORATE_MARKER_LOG"
    if [ "$event" = fence ]; then
        if [ "$rc" -eq 0 ]; then outcome=fence_ok; else outcome=fence_failed; fi
        printf '%s %s %s %s\n' "$now" "${QUORATE_NODE:--}" "$outcome" "${QUORATE_EPOCH:--}" \
            >>"$QUORATE_MARKER_LOG"
    fi
fi
exit "$rc"
