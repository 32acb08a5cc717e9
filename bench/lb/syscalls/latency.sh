#!/bin/bash
# Tail latency at a fixed rate through haven and HAProxy, alternating:
# ROUNDS (10) rounds of 10 s each, vegeta at RATE (10000) requests a second
# over 16 keep-alive connections, in MODE tcp (the default) or http
# (keep-alive). Each proxy on CPU 0 with one worker; vegeta and the backend
# on CPU 1, as in bench/lb. Prints p50, p90, p99 and the rate achieved per
# run, then how many rounds each proxy's p99 and p90 were the higher. Needs
# root, haproxy and vegeta (bench/lb/bin/vegeta, which `go run ./bench/lb`
# installs; installed here when missing). From the repository root:
#   bash bench/lb/syscalls/latency.sh
#   MODE=http ROUNDS=6 bash bench/lb/syscalls/latency.sh
set -euo pipefail
vegeta=$PWD/bench/lb/bin/vegeta
if [ ! -x "$vegeta" ]; then
	GOBIN=$PWD/bench/lb/bin go install github.com/tsenart/vegeta/v12@v12.13.0
fi
source "$(dirname "$0")/setup.sh"
case ${MODE:-tcp} in
tcp) haven_port=18082 haproxy_port=18083 ;;
http) haven_port=18080 haproxy_port=18081 ;;
*) echo "MODE is tcp or http, not ${MODE}" >&2; exit 2 ;;
esac
one() { # name port
	echo "GET http://127.0.0.1:$2/" | taskset -c 1 "$vegeta" attack -rate="${RATE:-10000}" -duration=10s \
		-keepalive=true -workers=16 -max-workers=16 >"$1.bin"
	"$vegeta" report -type=json <"$1.bin" | python3 -c '
import json, sys
d = json.load(sys.stdin); l = d["latencies"]
print("%-8s p50 %5.0f us  p90 %5.0f us  p99 %5.0f us  %6.0f/s  failed %d" % (sys.argv[1],
      l["50th"]/1e3, l["90th"]/1e3, l["99th"]/1e3, d["throughput"], d["requests"] - d["status_codes"].get("200", 0)))' "$1"
}
for round in $(seq "${ROUNDS:-10}"); do
	one haven $haven_port
	one haproxy $haproxy_port
done | tee runs.txt
awk '$1 == "haven" { h90 = $6; h99 = $9 } $1 == "haproxy" { n++; if (h99 > $9) p99++; if (h90 > $6) p90++ }
	END { printf "haven'\''s p99 higher in %d of %d rounds, its p90 in %d\n", p99, n, p90 }' runs.txt
