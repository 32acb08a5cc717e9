#!/bin/bash
# Where TCP mode's CPU goes: perf profiles (kernel and user, 5 s under
# wrk -c50 keep-alive) of haven's relay (io_uring, the default, unless
# HAVEN_TCP_RELAY says otherwise) and of HAProxy, each on CPU 0 with one
# worker, wrk and the backend on CPU 1; printed by shared object and by
# symbol. MODE=http profiles HTTP keep-alive instead (haven's HTTP loops).
# Needs root, wrk, haproxy; installs perf (linux-perf) when it is missing.
# From the repository root:
#   bash bench/lb/syscalls/profile-tcp.sh
#   MODE=http bash bench/lb/syscalls/profile-tcp.sh
set -euo pipefail
source "$(dirname "$0")/setup.sh"
need_perf
prof() { # name pid port
	local name=$1 pid=$2 port=$3
	taskset -c 1 wrk -t1 -c50 -d1s "http://127.0.0.1:$port/" >/dev/null 2>&1 # warm; haven's loops start with the first connection
	perf record -q -F 1999 -g -p "$pid" -o "perf-$name.data" -- sleep 5 2>/dev/null &
	local s=$!
	local reqs
	reqs=$(taskset -c 1 wrk -t1 -c50 -d5s "http://127.0.0.1:$port/" 2>&1 | awk '/requests in/{print $1}')
	wait $s
	echo "== $name: $reqs requests in 5 s"
	perf report -q -i "perf-$name.data" --no-children --sort dso --stdio -g none 2>/dev/null | head -8
	perf report -q -i "perf-$name.data" --no-children --sort sym --stdio -g none --percent-limit 1 2>/dev/null | head -40
}
case ${MODE:-tcp} in
tcp)
	prof haven-tcp "$H" 18082
	prof haproxy-tcp "$P" 18083
	;;
http)
	prof haven-keepalive "$H" 18080
	prof haproxy-keepalive "$P" 18081
	;;
*) echo "MODE is tcp or http, not ${MODE}" >&2; exit 2 ;;
esac
