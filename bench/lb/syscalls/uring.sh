#!/bin/bash
# TCP mode through haven's relay on epoll (HAVEN_TCP_RELAY=epoll) and on
# io_uring (the default: a second agent, haven-uring.yaml) beside HAProxy,
# each on CPU 0 with one worker, wrk and the backend on CPU 1: CPU, system
# calls and sleeps (context switches) per request, ROUNDS (4) interleaved
# rounds of 5 s. Needs root, wrk, haproxy and io_uring; installs perf
# (linux-perf) when it is missing. From the repository root:
#   bash bench/lb/syscalls/uring.sh
set -euo pipefail
export HAVEN_TCP_RELAY=epoll # the first agent's (setup.sh)
source "$(dirname "$0")/setup.sh"
need_perf
HAVEN_TCP_RELAY= GOMAXPROCS=1 taskset -c 0 "$tmp/haven" agent -c "$here/haven-uring.yaml" -n lb2 >/dev/null 2>haven-uring.log & R=$!
sleep 2
if ! grep -q "relaying on io_uring" haven-uring.log; then
	taskset -c 1 wrk -t1 -c1 -d1s "http://127.0.0.1:18092/" >/dev/null 2>&1 # the loops start with the first connection
fi
if ! grep -q "relaying on io_uring" haven-uring.log; then
	echo "the second agent is not relaying on io_uring: $(grep -i "tcp mode" haven-uring.log)" >&2
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
done
