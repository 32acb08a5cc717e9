#!/bin/bash
# System calls, sleeps and CPU per request, haven beside HAProxy, counted by
# the kernel's tracepoints (perf stat) rather than by strace. strace stops
# the proxy at every call, so the proxy falls behind its load and finds
# many events at each wait: it under-counts the waits (epoll) and hides
# how often a proxy runs out of work and sleeps. perf stat counts in the
# kernel without stopping anyone. Each proxy on CPU 0 with one worker
# (haven GOMAXPROCS=1, HAProxy nbthread 1), wrk and the backend on CPU 1, a
# warm-up second then a 5 s run per mode; ROUNDS=n repeats the whole set.
# "sleeps" are the proxy's context switches: each is a wait that found no
# work (the CPU went idle) and a wake-up when work came. Needs root, perf
# (linux-perf), wrk and haproxy; installs perf if missing. From the
# repository root:
#   bash bench/lb/syscalls/count.sh
set -euo pipefail
source "$(dirname "$0")/setup.sh"
need_perf
calls=(read write recvfrom sendto epoll_pwait epoll_wait epoll_ctl clock_gettime accept4
	close shutdown setsockopt getsockname futex nanosleep)
events=raw_syscalls:sys_enter,context-switches,task-clock
for c in "${calls[@]}"; do events+=",syscalls:sys_enter_$c"; done
one() { # name pid port [wrk args]
	local name=$1 pid=$2 port=$3; shift 3
	taskset -c 1 wrk -t1 -c50 -d1s "$@" "http://127.0.0.1:$port/" >/dev/null 2>&1
	perf stat -x, -e "$events" -p "$pid" -o "st-$name.csv" -- sleep 5 & local s=$!
	local out reqs
	out=$(taskset -c 1 wrk -t1 -c50 -d5s "$@" "http://127.0.0.1:$port/" 2>&1)
	wait $s
	reqs=$(echo "$out" | awk '/requests in/{print $1}')
	awk -F, -v r="$reqs" -v name="$name" '
		$3 == "raw_syscalls:sys_enter" { total = $1 / r }
		$3 == "context-switches" { sleeps = $1 / r }
		$3 == "task-clock" { us = $1 * 1000 / r }
		$3 ~ /^syscalls:sys_enter_/ && $1 / r >= 0.02 { sub("syscalls:sys_enter_", "", $3); list = list sprintf(" %s %.2f", $3, $1 / r) }
		END { printf "%-18s %7d requests  %5.2f us CPU  %5.3f sleeps  %5.2f syscalls:%s\n", name, r, us, sleeps, total, list }
	' "st-$name.csv"
}
for round in $(seq "${ROUNDS:-1}"); do
	each_mode one
done
