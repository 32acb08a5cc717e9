#!/bin/bash
# CPU per request of haven, thread by thread, under a wrk run: how the Go
# runtime's monitor thread (sysmon) and the hand-offs of the processor
# between threads were found to cost a fifth of haven's CPU before the
# event loops' system calls were made raw (internal/lb/nbio). haven on CPU 0
# with GOMAXPROCS=1, its backend and wrk on CPU 1; environment variables
# given to this script reach the agent, for A/B runs (HAVEN_HTTP_LOOP=off,
# HAVEN_TCP_RELAY=goroutines). Needs root and wrk. From the repository root:
#   bash bench/lb/syscalls/threads.sh 18080 -H 'Connection: close'   # HTTP
#   bash bench/lb/syscalls/threads.sh 18082                          # TCP mode
set -euo pipefail
port=${1:?usage: threads.sh PORT [wrk args]}; shift
no_haproxy=1
source "$(dirname "$0")/setup.sh"
snap() { # tid, CPU ticks (user+system), voluntary/involuntary context switches
  for t in /proc/$H/task/*; do
    echo "$(basename "$t") $(awk '{print $14+$15}' "$t/stat") $(awk '/^(voluntary|nonvoluntary)_ctxt/{print $2}' "$t/status" | paste -sd/)"
  done
}
snap > t0
out=$(taskset -c 1 wrk -t1 -c50 -d8s "$@" "http://127.0.0.1:$port/" 2>&1)
snap > t1
reqs=$(echo "$out" | awk '/requests in/{print $1}')
echo "$reqs requests"
join t0 t1 | awk -v r="$reqs" -v hz="$(getconf CLK_TCK)" '{
  split($3, a, "/"); split($5, b, "/"); cpu = ($4 - $2) / hz; total += cpu
  if (cpu > 0 || b[1] - a[1] > 100)
    printf "  thread %s: %.2f s CPU, %d voluntary and %d involuntary switches\n", $1, cpu, b[1] - a[1], b[2] - a[2]
} END { printf "haven: %.2f s CPU, %.2f us per request\n", total, total * 1e6 / r }'
