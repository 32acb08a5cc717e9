package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// lab is a configuration of two nodes on loopback: lb1 (a balancer with a
// floating address) and db1 (a database node and the coordination
// member), with the ports and directories doctor checks.
type lab struct {
	cfg                  *config.Config
	web, admin1, admin2  int
	clientPort, peerPort int
	bindir, dataDir      string
}

func newLab(t *testing.T, bindir string) *lab {
	t.Helper()
	dir := t.TempDir()
	l := &lab{web: testenv.FreePort(t), admin1: testenv.FreePort(t), admin2: testenv.FreePort(t), clientPort: testenv.FreePort(t), peerPort: testenv.FreePort(t),
		bindir: bindir, dataDir: filepath.Join(dir, "{node}", "pg")}
	bindirLine := ""
	if bindir != "" {
		bindirLine = "  bindir: " + bindir + "\n"
	}
	doc := fmt.Sprintf(`cluster: doc
regions:
  local:
    nodes:
      lb1: {address: 127.0.0.1, admin: "127.0.0.1:%d"}
      db1: {address: 127.0.0.1, admin: "127.0.0.1:%d"}
checks:
  web:
    http: {port: 8080}
balancers:
  web:
    nodes: [lb1]
    listen: "127.0.0.1:%d"
    check: web
    vip: {address: 198.18.1.100/24}
    backends:
      - {name: app1, address: "127.0.0.1:8080"}
database:
  nodes: [db1]
  data_dir: %s
%s  settings: {}
coordination:
  members: [db1]
  client_port: %d
  peer_port: %d
  data_dir: %s
`, l.admin1, l.admin2, l.web, l.dataDir, bindirLine, l.clientPort, l.peerPort, filepath.Join(dir, "{node}", "etcd"))
	cfg, err := config.Parse("haven.yaml", []byte(doc))
	if err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	l.cfg = cfg
	return l
}

// fakeProbes stand in for the kernel: every capability but those in
// lacking, nftables as given, the clock synchronised.
func fakeProbes(lacking []int, nft error) *Probes {
	caps := ^uint64(0)
	for _, c := range lacking {
		caps &^= 1 << c
	}
	return &Probes{
		Capabilities: func() (uint64, error) { return caps, nil },
		Nftables:     func() error { return nft },
		ClockSynced:  func() (bool, error) { return true, nil },
	}
}

func find(fs []Finding, check, substr string) (Finding, bool) {
	for _, f := range fs {
		if f.Check == check && strings.Contains(f.What, substr) {
			return f, true
		}
	}
	return Finding{}, false
}

// TestNodeFindsPlantedMisconfigurations plants, one at a time, what
// stops a node: a port taken, PostgreSQL's binaries missing, a peer that
// is not up, a capability and nftables missing. Doctor must name each,
// with the configuration key or the command that fixes it, and pass the
// same machine once nothing is planted.
func TestNodeFindsPlantedMisconfigurations(t *testing.T) {
	ctx := context.Background()
	b, err := pg.FindBinaries(ctx, "")
	testenv.Need(t, err == nil, "needs PostgreSQL 15 or later (apt-get install postgresql): %v", err)
	bindir := b.Dir

	t.Run("clean", func(t *testing.T) {
		l := newLab(t, bindir)
		// db1's agent "runs": its admin port answers.
		up, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", l.admin2))
		if err != nil {
			t.Fatal(err)
		}
		defer up.Close()
		fs := Node(ctx, l.cfg, "lb1", Options{Probes: fakeProbes(nil, nil)})
		if Failed(fs) {
			t.Fatalf("lb1 on a clean machine:\n%s", Format(fs))
		}
		for _, want := range []string{"db1's admin API", "db1's etcd client port"} {
			if _, ok := find(fs, "peers", want); !ok {
				t.Errorf("lb1 did not check %s:\n%s", want, Format(fs))
			}
		}
		fs = Node(ctx, l.cfg, "db1", Options{Probes: fakeProbes(nil, nil)})
		if f, ok := find(fs, "postgres", "PostgreSQL 1"); !ok || f.Severity != OK {
			t.Errorf("db1: PostgreSQL not found in %s:\n%s", bindir, Format(fs))
		}
	})

	t.Run("port taken", func(t *testing.T) {
		l := newLab(t, bindir)
		taken, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", l.web))
		if err != nil {
			t.Fatal(err)
		}
		defer taken.Close()
		fs := Node(ctx, l.cfg, "lb1", Options{Probes: fakeProbes(nil, nil)})
		f, ok := find(fs, "ports", "balancer web, is taken")
		if !ok || f.Severity != Fail || !strings.Contains(f.Fix, "balancers.web.listen") || !strings.Contains(f.Fix, fmt.Sprint(l.web)) {
			t.Fatalf("the balancer's port taken: %+v\n%s", f, Format(fs))
		}
	})

	t.Run("agent running", func(t *testing.T) {
		l := newLab(t, bindir)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", l.admin1))
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })}
		go srv.Serve(ln)
		defer srv.Close()
		fs := Node(ctx, l.cfg, "lb1", Options{Probes: fakeProbes(nil, nil)})
		f, ok := find(fs, "ports", "the agent runs here")
		if !ok || f.Severity != Warn || Failed(fs) {
			t.Fatalf("lb1's agent running: its own ports must not fail:\n%s", Format(fs))
		}
	})

	t.Run("postgres missing", func(t *testing.T) {
		empty := t.TempDir()
		l := newLab(t, empty)
		fs := Node(ctx, l.cfg, "db1", Options{Probes: fakeProbes(nil, nil)})
		f, ok := find(fs, "postgres", "missing postgres, initdb")
		if !ok || f.Severity != Fail || !strings.Contains(f.Fix, "database.bindir") {
			t.Fatalf("an empty bindir: %+v\n%s", f, Format(fs))
		}
	})

	t.Run("peer down", func(t *testing.T) {
		l := newLab(t, bindir)
		fs := Node(ctx, l.cfg, "lb1", Options{Probes: fakeProbes(nil, nil)})
		f, ok := find(fs, "peers", fmt.Sprintf("db1's admin API at 127.0.0.1:%d refused", l.admin2))
		if !ok || f.Severity != Warn || !strings.Contains(f.Fix, "systemctl start haven@db1") {
			t.Fatalf("db1's agent down: %+v\n%s", f, Format(fs))
		}
	})

	t.Run("peer silent", func(t *testing.T) {
		l := newLab(t, bindir)
		silent(t, l.admin2)
		fs := Node(ctx, l.cfg, "lb1", Options{Probes: fakeProbes(nil, nil), Timeout: 300 * time.Millisecond})
		f, ok := find(fs, "peers", fmt.Sprintf("db1's admin API at 127.0.0.1:%d", l.admin2))
		if !ok || f.Severity != Fail || !strings.Contains(f.Fix, "firewall") {
			t.Fatalf("db1's admin port silent: %+v\n%s", f, Format(fs))
		}
	})

	t.Run("capability and nftables", func(t *testing.T) {
		l := newLab(t, bindir)
		fs := Node(ctx, l.cfg, "lb1", Options{Probes: fakeProbes([]int{capNetAdmin}, errors.New("operation not supported"))})
		f, ok := find(fs, "capabilities", "CAP_NET_ADMIN missing")
		if !ok || f.Severity != Fail || !strings.Contains(f.What, "balancer web's floating address 198.18.1.100/24") {
			t.Errorf("CAP_NET_ADMIN missing: %+v\n%s", f, Format(fs))
		}
		if f, ok := find(fs, "nftables", "operation not supported"); !ok || f.Severity != Fail {
			t.Errorf("nftables refused: %+v\n%s", f, Format(fs))
		}
	})

	t.Run("unknown node", func(t *testing.T) {
		l := newLab(t, bindir)
		fs := Node(ctx, l.cfg, "db9", Options{})
		if !Failed(fs) || !strings.Contains(fs[0].Fix, "lb1") {
			t.Fatalf("an unknown node:\n%s", Format(fs))
		}
	})
}

// TestDiskTooFull: a data directory on a file system with less than 1 GiB
// free fails, naming the key that moves it.
func TestDiskTooFull(t *testing.T) {
	testenv.NeedRoot(t)
	dir := t.TempDir()
	if err := mountTmpfs(dir, "64m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmount(dir) })
	fs := checkDisks(needs{disks: []disk{{filepath.Join(dir, "db1", "pg"), "database.data_dir"}}})
	if len(fs) != 1 || fs[0].Severity != Fail || !strings.Contains(fs[0].Fix, "database.data_dir") {
		t.Fatalf("a 64 MiB disk:\n%s", Format(fs))
	}
	if _, err := os.Stat(filepath.Join(dir, "db1")); err == nil {
		t.Error("doctor made the data directory: it only looks")
	}
}

func mountTmpfs(dir, size string) error {
	return unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size)
}

func unmount(dir string) { unix.Unmount(dir, unix.MNT_DETACH) }

// silent makes port on 127.0.0.1 drop every new connection's SYN, as a
// firewall that drops does: a listener whose accept queue (backlog 0: one
// connection) is full and never accepted.
func silent(t *testing.T, port int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for range 2 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return // full already
		}
		t.Cleanup(func() { c.Close() })
	}
}
