# Sourced by the probes in this directory (from the repository root): it
# builds haven, and the packages named in $build_also, into a temporary
# directory; starts haven's backend on CPU 1 and, on CPU 0 with one worker
# each, haven's agent ($H) and, unless $no_haproxy is set, HAProxy ($P),
# with this directory's haven.yaml and haproxy.cfg; and stops them and
# removes the directory at exit, with $at_exit (a command) before. $X, if
# set, prefixes every command (packets.sh: ip netns exec). Environment
# variables given to the probe reach the agent.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; '"${at_exit:-true}"'; rm -rf "$tmp"' EXIT
go build -o "$tmp/haven" ./cmd/haven
for pkg in ${build_also:-}; do
	go build -o "$tmp/$(basename "$pkg")" "./$pkg"
done
cd "$tmp"
X=${X:-}
$X taskset -c 1 "$tmp/haven" backend --listen 127.0.0.1:19001 --name b1 >/dev/null 2>&1 &
GOMAXPROCS=1 $X taskset -c 0 "$tmp/haven" agent -c "$here/haven.yaml" -n lb1 >/dev/null 2>&1 & H=$!
if [ -z "${no_haproxy:-}" ]; then
	$X taskset -c 0 haproxy -db -f "$here/haproxy.cfg" >/dev/null 2>&1 & P=$!
fi
sleep 2

# need_perf installs perf (linux-perf) when it is missing.
need_perf() {
	perf version >/dev/null 2>&1 && return
	apt-get install -y -q linux-perf >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null && apt-get install -y -q linux-perf >/dev/null; }
}

# each_mode F calls F NAME PID PORT [wrk args] for each proxy in each mode:
# HTTP connection-close, HTTP keep-alive, TCP.
each_mode() {
	"$1" haven-close "$H" 18080 -H 'Connection: close'
	"$1" haproxy-close "$P" 18081 -H 'Connection: close'
	"$1" haven-keepalive "$H" 18080
	"$1" haproxy-keepalive "$P" 18081
	"$1" haven-tcp "$H" 18082
	"$1" haproxy-tcp "$P" 18083
}
