#!/bin/bash
# Packets per request, haven beside HAProxy: the TCP segments each sends
# per request under the same wrk load (nstat, in a network namespace of
# their own so that its counters are theirs alone), one connection-close
# request as tcpdump sees it through each, and the time a client with
# Nagle's algorithm on waits for a request written as head and body apart
# (nagle/main.go). Needs root, wrk and haproxy (go run ./bench/lb installs
# them); installs tcpdump when it is missing. From the repository root:
#   bash bench/lb/syscalls/packets.sh
set -euo pipefail
command -v tcpdump >/dev/null || apt-get install -y -q tcpdump >/dev/null ||
  { apt-get update -q >/dev/null && apt-get install -y -q tcpdump >/dev/null; }
ns=hvpk$$
ip netns add $ns
ip -n $ns link set lo up
X="ip netns exec $ns" at_exit="ip netns del $ns" build_also=bench/lb/syscalls/nagle
source "$(dirname "$0")/setup.sh"
segments() { # name port [wrk args]
  local name=$1 port=$2; shift 2
  $X nstat -n >/dev/null
  local reqs
  reqs=$($X taskset -c 1 wrk -t1 -c50 -d4s "$@" "http://127.0.0.1:$port/" 2>&1 | awk '/requests in/{print $1}')
  $X nstat -z >"nstat-$name"
  printf '%-18s %7s requests:' "$name" "$reqs"
  for k in TcpOutSegs TcpExtTCPPureAcks TcpExtDelayedACKs; do
    printf ' %s %.2f' "$k" "$(awk -v k=$k -v r="$reqs" '$1==k{print $2/r}' "nstat-$name")"
  done
  echo
}
echo "TCP segments per request (all sockets: wrk's, the proxy's, the backend's):"
segments haven-keepalive 18080
segments haproxy-keepalive 18081
segments haven-close 18080 -H 'Connection: close'
segments haproxy-close 18081 -H 'Connection: close'
segments haven-tcp 18082
segments haproxy-tcp 18083
for port in 18080 18081; do
  echo "One connection-close request through port $port (18080 haven, 18081 HAProxy):"
  $X timeout 2 tcpdump -i lo -nn -l "tcp port $port" 2>/dev/null >"dump-$port" &
  dump_pid=$!
  sleep 0.5
  $X curl -s -o /dev/null -H 'Connection: close' "http://127.0.0.1:$port/"
  wait $dump_pid || true # timeout ends tcpdump
  sed -E 's/^[0-9:.]+ IP //; s/(Flags \[[^]]*\]).*/\1/' "dump-$port"
done
echo "A Nagle client, head and body written apart (haven, HAProxy, the backend itself):"
for port in 18080 18081 19001; do $X "$tmp/nagle" -addr "127.0.0.1:$port"; done
