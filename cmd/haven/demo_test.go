package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/demo"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestDemo runs the README's first command. It kills a backend with
// kill -9 under steady traffic; the clients must not see a single failure.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo runs for 20s")
	}
	// The binary a user builds, not the race detector's: the demo's agents
	// are its own executable, and race-built ones, each several times the
	// CPU, at CI's load (17 on 2 cores beside the keeper's tests) lost
	// act 3's 1 s database lease over and over before the act's own fault.
	// The agents' code runs under the race detector in the other tests. A
	// bound, not a measure; act 5 plays in TestDemoRegion, within a bound
	// of its own.
	r := runHaven(t, testenv.Haven(t), 6*time.Minute, "demo", "--duration", "20s", "--region=false", "--volume=false")
	if r.code != 0 {
		t.Fatalf("haven demo --duration 20s --region=false --volume=false:\n%s", r)
	}
	for _, want := range []string{
		"haven demo " + testenv.Version,
		"kill -9 web2",
		"web2 restarted",
		"marked web2 down",
		"marked web2 up again",
		"first request served by web2 again",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, r.stdout)
		}
	}
	// It ends as a drill does: every act met the warm standby's objectives.
	if !strings.Contains(r.stdout, "drill summary: each act against the warm standby's objectives") || strings.Contains(r.stdout, "NOT MET") ||
		!regexp.MustCompile(`(?m)^3 +the primary's node killed +database +\S+ +30s +0 writes +0s +met$`).MatchString(r.stdout) {
		t.Errorf("the demo's drill summary is missing or not met:\n%s", r.stdout)
	}
	counts := regexp.MustCompile(`requests sent (\d+), failed (\d+)`).FindAllStringSubmatch(r.stdout, -1)
	if counts == nil {
		t.Fatalf("the demo's output has no \"requests sent N, failed M\":\n%s", r.stdout)
	}
	if m := counts[0]; m[1] == "0" || m[2] != "0" {
		t.Errorf("the demo sent %s requests and %s failed, want some sent and \"failed 0\":\n%s", m[1], m[2], r.stdout)
	}
	why := demo.CanRunFloating()
	testenv.Need(t, why == nil, "act 2 of the demo: %v", why)
	// Act 2: the balancer node holding the floating address is killed;
	// the other takes the address over.
	m := regexp.MustCompile(`(lb\d) holds 198\.18\.1\.100; sending traffic`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("act 2 did not report a first holder:\n%s", r.stdout)
	}
	first := m[1]
	if !strings.Contains(r.stdout, "kill -9 the agent on "+first) {
		t.Errorf("act 2 did not kill the holder %s:\n%s", first, r.stdout)
	}
	m = regexp.MustCompile(`(lb\d) holds 198\.18\.1\.100 \(fencing epoch \d+\)`).FindStringSubmatch(r.stdout)
	if m == nil || m[1] == first {
		t.Errorf("act 2: the other balancer node did not take the address over:\n%s", r.stdout)
	}
	if len(counts) < 2 || counts[1][1] == "0" {
		t.Errorf("act 2 sent no traffic to the floating address:\n%s", r.stdout)
	}
	why = demo.CanRunDatabase()
	testenv.Need(t, why == nil, "act 3 of the demo: %v", why)
	// Act 3: the database primary's node is killed under orders; every
	// acknowledged order must be on the new primary.
	m = regexp.MustCompile(`(db\d) is the primary, both replicas stream from it; 4 clients place orders`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("act 3 did not report a first primary:\n%s", r.stdout)
	}
	first = m[1]
	if !strings.Contains(r.stdout, "kill -9 the agent on "+first) {
		t.Errorf("act 3 did not kill the primary %s:\n%s", first, r.stdout)
	}
	if m = regexp.MustCompile(`(db\d) is the primary; the router sends`).FindStringSubmatch(r.stdout); m == nil || m[1] == first {
		t.Errorf("act 3: no other node became the primary:\n%s", r.stdout)
	}
	if m = regexp.MustCompile(`orders acknowledged (\d+), failed`).FindStringSubmatch(r.stdout); m == nil || m[1] == "0" {
		t.Errorf("act 3 had no order acknowledged:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "acknowledged orders lost: 0 ") {
		t.Errorf("act 3 lost acknowledged orders:\n%s", r.stdout)
	}
	// Act 3's last scene: the orders table dropped by mistake is restored
	// from the base backup and the archive to just before the drop.
	if !regexp.MustCompile(`base backup \S+ taken from db\d \(a replica`).MatchString(r.stdout) {
		t.Errorf("act 3 took no base backup from a replica:\n%s", r.stdout)
	}
	acked := regexp.MustCompile(`orders acknowledged (\d+), failed`).FindStringSubmatch(r.stdout)
	rec := regexp.MustCompile(`orders recovered: (\d+); acknowledged orders missing: (\d+)`).FindStringSubmatch(r.stdout)
	switch {
	case rec == nil:
		t.Errorf("act 3 did not restore the dropped table:\n%s", r.stdout)
	case rec[2] != "0":
		t.Errorf("act 3's restore misses %s acknowledged orders:\n%s", rec[2], r.stdout)
	case acked != nil && atoi(t, rec[1]) < atoi(t, acked[1]):
		t.Errorf("act 3 restored %s orders, fewer than the %s acknowledged:\n%s", rec[1], acked[1], r.stdout)
	}
	// Act 4: the DNS answer moves from east to west and back.
	for _, want := range []string{
		"dig www.gslb.demo. A  ->  198.18.1.12 (east)",
		"kill -9 east's web server",
		"dig www.gslb.demo. A  ->  198.18.1.13 (west)",
		"dig www.gslb.demo. A  ->  198.18.1.12 (east again",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("act 4's output lacks %q:\n%s", want, r.stdout)
		}
	}
}

// TestDemoRegion plays the demo's first act and its fifth, the database
// across two regions: region east is lost, writes resume in west where the
// traffic manager's answer points, and east comes back as the standby.
func TestDemoRegion(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo's fifth act runs for one to three minutes")
	}
	why := demo.CanRunRegion()
	testenv.Need(t, why == nil, "act 5 of the demo: %v", why)
	// A bound, not a measure: the act took 40s on a quiet 2-core machine
	// and up to 180s when it was busy with other namespace tests. Its
	// nine agents and six postgres servers run the binary built
	// without the race detector: race-built, they took most of CI's two
	// cores for minutes; the code they run beyond the demo's is the
	// keeper's and the agent's, which their own packages test with it.
	r := runHaven(t, testenv.Haven(t), 6*time.Minute, "demo", "--duration", "1s", "--floating=false", "--database=false", "--traffic=false", "--volume=false")
	if r.code != 0 {
		t.Fatalf("haven demo --duration 1s --floating=false --database=false --traffic=false --volume=false:\n%s", r)
	}
	// Act 5: region east is lost; writes resume in west where the traffic
	// manager's answer points, east takes no write after west's first, and
	// east comes back as the standby region.
	for _, want := range []string{
		"region east is lost: every link of its segment cut",
		"wc's name server answers db.gslb.demo. -> 198.18.2.14 (west)",
		"east acknowledged 0 orders after west's first",
		"east is the standby region",
		"active region: west",
		"and no longer has: 0",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("act 5's output lacks %q:\n%s", want, r.stdout)
		}
	}
	if !regexp.MustCompile(`(?m)^5 +region east lost +region +\S+ +2m +\d+ writes.* +5s +met$`).MatchString(r.stdout) {
		t.Errorf("the demo's drill summary does not judge act 5 met against the region's objectives:\n%s", r.stdout)
	}
	if !regexp.MustCompile(`region east is active, e\d its primary`).MatchString(r.stdout) {
		t.Errorf("act 5 did not report east's primary:\n%s", r.stdout)
	}
	// A bound with a wide margin for a busy machine, not a measure: the
	// region lease is 4s.
	if m := regexp.MustCompile(`first order acknowledged in west: RTO (\d+\.\d+)s`).FindStringSubmatch(r.stdout); m == nil {
		t.Errorf("act 5 reported no RTO:\n%s", r.stdout)
	} else if rto, _ := strconv.ParseFloat(m[1], 64); rto > 40 {
		t.Errorf("act 5: RTO %ss, more than the region lease and 36s:\n%s", m[1], r.stdout)
	}
	if m := regexp.MustCompile(`RPO: (\d+) of the (\d+) orders acknowledged in east`).FindStringSubmatch(r.stdout); m == nil || m[2] == "0" {
		t.Errorf("act 5 acknowledged no order in east, or reported no RPO:\n%s", r.stdout)
	}
}

// TestDemoVolume plays the demo's first act and its sixth: a file uploaded
// through the balancer is served, identical, by the other application
// node after the one that stored it is killed.
func TestDemoVolume(t *testing.T) {
	if testing.Short() {
		t.Skip("the volume act runs for about a minute")
	}
	why := demo.CanRunVolume()
	testenv.Need(t, why == nil, "the demo's volume act: %v", why)
	r := runHaven(t, testenv.Haven(t), 6*time.Minute, "demo", "--duration", "1s", "--floating=false", "--database=false", "--traffic=false", "--region=false")
	if r.code != 0 {
		t.Fatalf("haven demo (act 6):\n%s", r)
	}
	m := regexp.MustCompile(`through the balancer: stored by (app\d)`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("act 6 stored no upload:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "kill -9 of everything on "+m[1]) {
		t.Errorf("act 6 did not kill %s, which stored the file:\n%s", m[1], r.stdout)
	}
	if !regexp.MustCompile(`served by app\d from the volume, 262144 bytes, identical to the upload: true`).MatchString(r.stdout) {
		t.Errorf("act 6: the file was not served, identical, after the kill:\n%s", r.stdout)
	}
	if !regexp.MustCompile(`(?m)^6 +the application node that stored a file killed +web .* met$`).MatchString(r.stdout) {
		t.Errorf("the demo's drill summary does not judge act 6 met:\n%s", r.stdout)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDemoGalera plays the demo's third act on Galera (haven demo --engine
// galera): the writer's node crashes under orders and another takes the
// writes; then every node crashes and the cluster comes back by itself;
// every acknowledged order is on every node.
func TestDemoGalera(t *testing.T) {
	if testing.Short() {
		t.Skip("the Galera act runs for about a minute")
	}
	why := demo.CanRunGalera()
	testenv.Need(t, why == nil, "the demo's Galera act: %v", why)
	// The binary a user builds, as in TestDemo; a bound, not a measure.
	r := runHaven(t, testenv.Haven(t), 8*time.Minute, "demo", "--engine", "galera", "--duration", "1s", "--floating=false", "--traffic=false", "--volume=false")
	if r.code != 0 {
		t.Fatalf("haven demo --engine galera:\n%s", r)
	}
	m := regexp.MustCompile(`the cluster is up: .*; (db\d) is the writer`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("the Galera act did not report a first writer:\n%s", r.stdout)
	}
	first := m[1]
	if !strings.Contains(r.stdout, "kill -9 of "+first+"'s server and agent") {
		t.Errorf("the Galera act did not kill the writer %s:\n%s", first, r.stdout)
	}
	if m = regexp.MustCompile(`(db\d) is the writer: the others evicted`).FindStringSubmatch(r.stdout); m == nil || m[1] == first {
		t.Errorf("the Galera act: no other node took the writes:\n%s", r.stdout)
	}
	for _, want := range []string{
		"act 5 (a second region: region east is lost) skipped: the second region runs PostgreSQL only",
		"every node crashes at once",
		"the cluster is back by itself, bootstrapped from the most advanced node",
		"acknowledged orders missing on any node: 0 ",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the Galera act's output lacks %q:\n%s", want, r.stdout)
		}
	}
	if m = regexp.MustCompile(`orders acknowledged (\d+), failed`).FindStringSubmatch(r.stdout); m == nil || m[1] == "0" {
		t.Errorf("the Galera act had no order acknowledged:\n%s", r.stdout)
	}
	if !regexp.MustCompile(`(?m)^3 +the Galera writer's node killed +database +\S+ +30s +0 writes +0s +met$`).MatchString(r.stdout) {
		t.Errorf("the demo's drill summary does not judge the Galera act met:\n%s", r.stdout)
	}
}
