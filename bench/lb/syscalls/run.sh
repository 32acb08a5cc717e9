#!/bin/bash
# System calls per request, haven beside HAProxy, under the same wrk load:
# each proxy on CPU 0 (haven GOMAXPROCS=1, HAProxy nbthread 1), strace -c -f
# attached for a 5 s wrk run on CPU 1. strace slows both proxies down; the
# counts per request are what to read. Needs root, strace, wrk and haproxy
# (go run ./bench/lb installs the last two). Run from the repository root:
#   bash bench/lb/syscalls/run.sh
set -euo pipefail
source "$(dirname "$0")/setup.sh"
one() { # name pid port [wrk args]
  local name=$1 pid=$2 port=$3; shift 3
  strace -c -f -q -p "$pid" -o "sc-$name.txt" & local s=$!
  sleep 1
  local out reqs calls
  out=$(taskset -c 1 wrk -t1 -c50 -d5s "$@" "http://127.0.0.1:$port/" 2>&1)
  kill -INT $s; wait $s 2>/dev/null || true
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  calls=$(awk '$NF=="total"{print $(NF-2)}' "sc-$name.txt")
  printf '%-18s %6s requests  %5.2f syscalls/request:' "$name" "$reqs" "$(echo "scale=2; $calls/$reqs" | bc)"
  awk -v r="$reqs" '$4 ~ /^[0-9]+$/ && $NF!="total" && $4/r >= 0.05 {printf "  %s %.2f", $NF, $4/r}' "sc-$name.txt"
  echo
}
each_mode one
