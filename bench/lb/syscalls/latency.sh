#!/bin/bash
# Tail latency at a fixed rate through haven and HAProxy, alternating:
# ROUNDS (10) rounds of DURATION (10) seconds each, vegeta at RATE (10000)
# requests a second over 16 connections, in MODE tcp (the default), http
# (keep-alive) or close (HTTP, a connection per request). Each proxy on CPU
# 0 with one worker; vegeta and the backend on CPU 1, as in bench/lb.
# Prints p50, p90, p99 and the rate achieved per run; then how many rounds
# each proxy's p99 and p90 were the higher, the median of the rounds' p99
# ratios with its 95% interval, and each proxy's percentiles over all its
# rounds together.
#
# This machine's speed drifts by more than the proxies differ, over tens of
# seconds: many short rounds (ROUNDS=30 DURATION=3) put each pair of runs
# under nearly the same conditions. The median ratio and its interval are
# the figures to compare; the pooled percentiles weigh the machine's slow
# stretches most. Needs root, haproxy and vegeta (bench/lb/bin/vegeta,
# which `go run ./bench/lb` installs; installed here when missing). From
# the repository root:
#   bash bench/lb/syscalls/latency.sh
#   MODE=close RATE=4000 ROUNDS=30 DURATION=3 bash bench/lb/syscalls/latency.sh
set -euo pipefail
vegeta=$PWD/bench/lb/bin/vegeta
if [ ! -x "$vegeta" ]; then
	GOBIN=$PWD/bench/lb/bin go install github.com/tsenart/vegeta/v12@v12.13.0
fi
source "$(dirname "$0")/setup.sh"
keepalive=true
case ${MODE:-tcp} in
tcp) haven_port=18082 haproxy_port=18083 ;;
http) haven_port=18080 haproxy_port=18081 ;;
close) haven_port=18080 haproxy_port=18081 keepalive=false ;;
*) echo "MODE is tcp, http or close, not ${MODE}" >&2; exit 2 ;;
esac
# percentiles NAME FILE... prints one line of vegeta's latencies.
percentiles() {
	local name=$1
	shift
	"$vegeta" report -type=json "$@" | python3 -c '
import json, sys
d = json.load(sys.stdin); l = d["latencies"]
rate = "%6.0f/s" % d["throughput"] if sys.argv[2] == "1" else "%d requests" % d["requests"]
print("%-8s p50 %5.0f us  p90 %5.0f us  p99 %5.0f us  %s  failed %d" % (sys.argv[1],
      l["50th"]/1e3, l["90th"]/1e3, l["99th"]/1e3, rate, d["requests"] - d["status_codes"].get("200", 0)))' "$name" $#
}
one() { # name port round
	echo "GET http://127.0.0.1:$2/" | taskset -c 1 "$vegeta" attack -rate="${RATE:-10000}" -duration="${DURATION:-10}s" \
		-keepalive=$keepalive -workers=16 -max-workers=16 >"$1-$3.bin"
	percentiles "$1" "$1-$3.bin"
}
for round in $(seq "${ROUNDS:-10}"); do
	one haven $haven_port "$round"
	one haproxy $haproxy_port "$round"
done | tee runs.txt
awk '$1 == "haven" { h90 = $6; h99 = $9 } $1 == "haproxy" { n++; if (h99 > $9) p99++; if (h90 > $6) p90++; print h99 / $9 }
	END { printf "haven'\''s p99 higher in %d of %d rounds, its p90 in %d\n", p99, n, p90 > "/dev/stderr" }' runs.txt 2>&1 >ratios.txt
# The median's 95% interval by the sign test (normal approximation): the
# ratios ranked k and n-k+1, k = n/2 - 0.98 sqrt(n). An interval that holds
# 1 means the rounds cannot tell the proxies' p99 apart.
sort -g ratios.txt | awk '{ r[NR] = $1 } END {
	m = NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
	k = int(NR / 2 - 0.98 * sqrt(NR)); if (k < 1) k = 1
	printf "median of the rounds'\'' p99 ratios (haven / HAProxy): %.3f, 95%% interval %.3f to %.3f\n", m, r[k], r[NR - k + 1] }'
echo "all rounds together:"
percentiles haven haven-*.bin
percentiles haproxy haproxy-*.bin
