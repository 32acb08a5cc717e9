package main

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/testenv"
)

// The writer's classification decides what counts as lost: a write the
// server refused was not written; one whose answer never came may have been.
func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, "acked"},
		{&mysql.MySQLError{Number: 1047, Message: "WSREP has not yet prepared node for application use"}, "failed"},
		{fmt.Errorf("exec: %w", &mysql.MySQLError{Number: 1213, Message: "Deadlock found"}), "failed"},
		{driver.ErrBadConn, "failed"},
		{&mysql.MySQLError{Number: 1180, Message: "Got error 6 during COMMIT"}, "indeterminate"},
		{&mysql.MySQLError{Number: 1053, Message: "Server shutdown in progress"}, "indeterminate"},
		{mysql.ErrInvalidConn, "indeterminate"},
		{io.ErrUnexpectedEOF, "indeterminate"},
		{errors.New("i/o timeout"), "indeterminate"},
	} {
		got := map[int]string{0: "acked", 1: "failed", 2: "indeterminate"}[int(classify(c.err))]
		if got != c.want {
			t.Errorf("classify(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	s := summarize([]runResult{
		{Gap: time.Second, Acked: 10, Writable: 3 * time.Second},
		{Gap: 3 * time.Second, Acked: 10, Writable: 5 * time.Second, ByHand: true, lossReport: lossReport{Lost: []int{4}}},
		{Gap: never, Acked: 10, Err: "writes not back"},
		{Err: "before the fault"}, // never wrote: not a run
	})
	if s.Runs != 3 || s.Errors != 2 || s.Median != 3*time.Second || s.Worst != never || s.Lost != 1 || s.RunsLost != 1 || s.ByHand != 1 {
		t.Errorf("summary %+v", s)
	}
	if s.Writable != 4*time.Second || s.WritableWorst != 5*time.Second {
		t.Errorf("writable %v / %v, want 4s / 5s", s.Writable, s.WritableWorst)
	}
	if got := ratio(5*time.Second, time.Second); got != "5.0×" {
		t.Errorf("ratio = %q", got)
	}
}

func TestFirstAckedSince(t *testing.T) {
	ws := []write{
		{Seq: 1, Start: 0, End: 10, Outcome: acked},
		{Seq: 2, Start: 20, End: 30, Outcome: failed},
		{Seq: 3, Start: 40, End: 55, Outcome: acked},
	}
	if got := firstAckedSince(ws, 15); got != 55 {
		t.Errorf("firstAckedSince(15) = %v, want 55", got)
	}
	if got := firstAckedSince(ws, 41); got != -1 {
		t.Errorf("firstAckedSince(41) = %v, want -1", got)
	}
}

// The peer's configuration files are the guide's stack as documented:
// Galera's defaults, one writer with backups, a clustercheck on 9200.
func TestPeerConfs(t *testing.T) {
	dir := t.TempDir()
	if err := writePeerConf(filepath.Join(dir, "my.cnf"), dir, "db2", "/usr/lib/galera/libgalera_smm.so"); err != nil {
		t.Fatal(err)
	}
	cnf, _ := os.ReadFile(filepath.Join(dir, "my.cnf"))
	for _, want := range []string{"wsrep_cluster_address = gcomm://198.18.1.11,198.18.1.12,198.18.1.13", "wsrep_node_address = 198.18.1.12",
		"wsrep_sst_method = mariabackup", "socket = " + dir + "/mysqld.sock"} {
		if !strings.Contains(string(cnf), want) {
			t.Errorf("my.cnf: no %q in\n%s", want, cnf)
		}
	}
	if strings.Contains(string(cnf), "bind_address") {
		t.Errorf("my.cnf binds to one address; the database address must reach the server too:\n%s", cnf)
	}
	if strings.Contains(string(cnf), "wsrep_provider_options") {
		t.Errorf("my.cnf sets provider options; the peer runs Galera's defaults:\n%s", cnf)
	}
	if err := writeKeepalived(dir, "db2", "/usr/bin/mariadb", filepath.Join(dir, "mysqld.sock")); err != nil {
		t.Fatal(err)
	}
	ka, _ := os.ReadFile(filepath.Join(dir, "keepalived.conf"))
	for _, want := range []string{"priority 102", "198.18.1.100/24 dev eth0", "chk_galera", filepath.Join(dir, "chk_galera.sh")} {
		if !strings.Contains(string(ka), want) {
			t.Errorf("keepalived.conf: no %q in\n%s", want, ka)
		}
	}
	hp := filepath.Join(dir, "haproxy.cfg")
	if err := writeHAProxyConf(hp); err != nil {
		t.Fatal(err)
	}
	hc, _ := os.ReadFile(hp)
	for _, want := range []string{"option httpchk", "server db1 198.18.1.11:3306 check port 9200\n", "server db2 198.18.1.12:3306 check port 9200 backup"} {
		if !strings.Contains(string(hc), want) {
			t.Errorf("haproxy.cfg: no %q in\n%s", want, hc)
		}
	}
	t.Run("check-script", func(t *testing.T) {
		// The check passes on a synced node's status line and fails on
		// a joiner's; the mariadb client is replaced by echo.
		for status, ok := range map[string]bool{"wsrep_local_state\t4": true, "wsrep_local_state\t1": false, "": false} {
			d := t.TempDir()
			fake := filepath.Join(d, "mariadb")
			if err := os.WriteFile(fake, []byte("#!/bin/sh\nprintf '"+strings.ReplaceAll(status, "\t", `\t`)+"\\n'\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := writeKeepalived(d, "db1", fake, filepath.Join(d, "mysqld.sock")); err != nil {
				t.Fatal(err)
			}
			err := exec.Command("sh", filepath.Join(d, "chk_galera.sh")).Run()
			if (err == nil) != ok {
				t.Errorf("check on %q: %v, want success %v", status, err, ok)
			}
		}
	})
	t.Run("haproxy-c", func(t *testing.T) {
		testenv.NeedCommand(t, "haproxy", "haproxy")
		if out, err := exec.Command("haproxy", "-c", "-q", "-f", hp).CombinedOutput(); err != nil {
			t.Errorf("haproxy -c -f %s: %v\n%s", hp, err, out)
		}
	})
}

// haven's haven.yaml loads with haven's own config package and asks for
// the engine's defaults.
func TestHavenConf(t *testing.T) {
	dir := t.TempDir()
	if err := writeHavenConf(dir); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(filepath.Join(dir, "haven.yaml"))
	if err != nil {
		t.Fatalf("haven.yaml does not load: %v", err)
	}
	db := cfg.Database
	if db == nil || db.Engine != "galera" || db.Galera == nil || !slices.Equal(db.Nodes, nodes) {
		t.Fatalf("database %+v", db)
	}
	if db.Galera.FailureDetection.D() != galeraDefault || db.Galera.Writers != "one" {
		t.Errorf("galera %+v: the bench measures the defaults", db.Galera)
	}
	if tg, _ := findTarget("haven"); tg.period != db.Lease.D() {
		t.Errorf("haven's period %v is not its writer lease %v", tg.period, db.Lease.D())
	}
	for _, h := range hosts {
		if n, ok := cfg.Node(h); !ok || n.Address != hostAddr(h).String() {
			t.Errorf("node %s: %+v", h, n)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := options{runs: 5, targets: []string{"keepalived", "haven"}, scenarios: []string{"writer"}, every: 20 * time.Millisecond,
		connTimeout: time.Second, opTimeout: time.Second, pre: 2 * time.Second, post: 2 * time.Second,
		maxOutage: time.Minute, personAfter: 40 * time.Second, settle: time.Minute, install: "auto"}
	if err := validate(ok); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []func(*options){
		func(o *options) { o.targets = []string{"patroni"} },
		func(o *options) { o.scenarios = []string{"postmaster"} },
		func(o *options) { o.personAfter = 2 * time.Minute },
		func(o *options) { o.personAfter = 30 * time.Second },
		func(o *options) { o.runs = 0 },
	} {
		o := ok
		bad(&o)
		if validate(o) == nil {
			t.Errorf("%+v passed validation", o)
		}
	}
}
