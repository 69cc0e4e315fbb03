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

event=${1:-${QUORATE_HOOK:-unknown}}

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
