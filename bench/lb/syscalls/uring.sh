#!/bin/bash
# TCP mode through haven's epoll relay (HAVEN_TCP_RELAY=epoll), haven's
# io_uring relay (the default, a second agent: haven-uring.yaml), HAProxy and a probe
# relay on io_uring (syscalls/uringproto: bare, see its comment), each on
# CPU 0 with one worker, wrk and the backend on CPU 1: CPU, system calls
# and sleeps (context switches) per request, ROUNDS (4) interleaved rounds
# of 5 s. Needs root, wrk, haproxy and io_uring; installs perf
# (linux-perf) when it is missing. URING_PROCS (1) is the probe's
# GOMAXPROCS and URING_ARGS more flags for it: URING_PROCS=2
# URING_ARGS="-chores 10ms" has it wait raw on one processor while a
# goroutine on the other wakes every 10 ms, as an agent's chores would.
# From the repository root:
#   bash bench/lb/syscalls/uring.sh
set -euo pipefail
build_also=bench/lb/syscalls/uringproto
export HAVEN_TCP_RELAY=epoll # the first agent's (setup.sh)
source "$(dirname "$0")/setup.sh"
need_perf
# shellcheck disable=SC2086 # URING_ARGS is a list of flags
GOMAXPROCS=${URING_PROCS:-1} taskset -c 0 "$tmp/uringproto" -listen 127.0.0.1:18084 -backend 127.0.0.1:19001 ${URING_ARGS:-} 2>uringproto.log & U=$!
HAVEN_TCP_RELAY= GOMAXPROCS=1 taskset -c 0 "$tmp/haven" agent -c "$here/haven-uring.yaml" -n lb2 >/dev/null 2>haven-uring.log & R=$!
sleep 2
if ! kill -0 $U 2>/dev/null; then
	# io_uring refused (kernel.io_uring_disabled, a seccomp profile) or the port taken
	echo "the io_uring probe did not start: $(cat uringproto.log)" >&2
	exit 1
fi
one() { # name pid port
	local name=$1 pid=$2 port=$3 c0 c1 out reqs
	taskset -c 1 wrk -t1 -c50 -d1s "http://127.0.0.1:$port/" >/dev/null 2>&1
	perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$pid" -o "st-$name.csv" -- sleep 5 & local s=$!
	c0=$(awk '{print $14+$15}' "/proc/$pid/stat")
	out=$(taskset -c 1 wrk -t1 -c50 -d5s "http://127.0.0.1:$port/" 2>&1)
	c1=$(awk '{print $14+$15}' "/proc/$pid/stat")
	wait $s
	reqs=$(echo "$out" | awk '/requests in/{print $1}')
	awk -F, -v r="$reqs" -v name="$name" -v us="$(echo "scale=2; ($c1-$c0)*1000000/$(getconf CLK_TCK)/$reqs" | bc)" '
		$3 == "raw_syscalls:sys_enter" { calls = $1 / r }
		$3 == "context-switches" { sleeps = $1 / r }
		END { printf "%-11s %7d requests  %6.2f us CPU  %5.2f syscalls  %5.3f sleeps\n", name, r, us, calls, sleeps }
	' "st-$name.csv"
}
for round in $(seq "${ROUNDS:-4}"); do
	one haven-epoll $H 18082
	one haven-uring $R 18092
	one haproxy $P 18083
	one uring $U 18084
done
