package coord

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/haven-ha/haven/internal/certs"
	"github.com/haven-ha/haven/internal/testenv"
)

// Integration tests run real etcd members on loopback addresses
// 127.0.0.11-13 with free ports, data under t.TempDir(), and stop
// everything in t.Cleanup.

const (
	readyTimeout = 60 * time.Second // generous: -race on two shared cores
	stopWait     = 30 * time.Second
)

// testWriter passes log lines to t.Log until the test has finished.
type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// testLog returns a logger that writes to t.Log. Call it before starting
// anything, so that its cleanup runs last.
func testLog(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, nil))
}

// freeAddrs returns one ip:port for each ip, with ports free a moment ago,
// below the ephemeral range, and different from each other
// (testenv.FreeAddr).
func freeAddrs(t *testing.T, ips ...string) []string {
	t.Helper()
	addrs := make([]string, len(ips))
	for i, ip := range ips {
		addrs[i] = testenv.FreeAddr(t, ip)
	}
	return addrs
}

// clusterConfigs returns the configs of n members m1..mn on 127.0.0.11...
// With tlsDir, it issues certificates there and sets TLS.
func clusterConfigs(t *testing.T, log *slog.Logger, n int, token, tlsDir string) []MemberConfig {
	t.Helper()
	scheme := "http"
	if tlsDir != "" {
		scheme = "https"
	}
	initial := map[string]string{}
	cfgs := make([]MemberConfig, n)
	var nodes []certs.Node
	var ips []string
	for i := range cfgs {
		ip := fmt.Sprintf("127.0.0.%d", 11+i)
		ips = append(ips, ip, ip) // peer, client
	}
	addrs := freeAddrs(t, ips...)
	for i := range cfgs {
		name := fmt.Sprintf("m%d", i+1)
		ip := ips[2*i]
		peer := scheme + "://" + addrs[2*i]
		initial[name] = peer
		cfgs[i] = MemberConfig{
			Name:         name,
			DataDir:      filepath.Join(testenv.MemoryDir(t), name, "etcd"), // the default layout: {node}/etcd
			PeerURL:      peer,
			ClientURL:    addrs[2*i+1],
			ClusterToken: token,
			Logger:       log,
		}
		nodes = append(nodes, certs.Node{Name: name, Addresses: []string{ip}})
	}
	if tlsDir != "" {
		if _, err := certs.Generate(tlsDir, token, nodes, certs.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range cfgs {
		cfgs[i].InitialCluster = initial
		if tlsDir != "" {
			cfgs[i].TLS = nodeTLS(tlsDir, cfgs[i].Name)
		}
	}
	return cfgs
}

func nodeTLS(dir, node string) *TLSFiles {
	return &TLSFiles{
		CA:   filepath.Join(dir, certs.CAFile),
		Cert: filepath.Join(dir, node+".pem"),
		Key:  filepath.Join(dir, node+"-key.pem"),
	}
}

// runningMember is a member whose Run is in progress.
type runningMember struct {
	m      *Member
	cancel context.CancelFunc
	done   chan error

	once sync.Once
	err  error
}

// errStuck is the result of a Run that did not return in time.
var errStuck = errors.New("member did not stop in time")

// oneMember starts a cluster of one member and waits until it serves; in
// -short mode it skips the test.
func oneMember(t *testing.T, log *slog.Logger) *runningMember {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd")
	}
	r := startMember(t, clusterConfigs(t, log, 1, "shop", "")[0])
	waitReady(t, r)
	return r
}

func startMember(t *testing.T, cfg MemberConfig) *runningMember {
	t.Helper()
	m, err := NewMember(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningMember{m: m, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- m.Run(ctx) }()
	t.Cleanup(func() {
		if err := r.stop(); errors.Is(err, errStuck) {
			t.Errorf("stop %s: %v", cfg.Name, err)
		}
	})
	return r
}

// result waits up to timeout for Run to return (cancelling it first when
// cancel is set) and returns its result; later calls return the same.
func (r *runningMember) result(timeout time.Duration, cancel bool) error {
	r.once.Do(func() {
		if cancel {
			r.cancel()
		}
		select {
		case r.err = <-r.done:
		case <-time.After(timeout):
			r.cancel()
			r.err = fmt.Errorf("%w (%v)", errStuck, timeout)
		}
	})
	return r.err
}

// stop cancels Run and returns its result.
func (r *runningMember) stop() error { return r.result(stopWait, true) }

// wait returns Run's result once it returns on its own.
func (r *runningMember) wait(timeout time.Duration) error { return r.result(timeout, false) }

func waitReady(t *testing.T, rs ...*runningMember) {
	t.Helper()
	deadline := time.After(readyTimeout)
	for _, r := range rs {
		select {
		case <-r.m.Ready():
		case err := <-r.done:
			r.done <- err // for stop
			t.Fatalf("member %s: Run returned before Ready: %v", r.m.name, err)
		case <-deadline:
			t.Fatalf("member %s not ready within %v", r.m.name, readyTimeout)
		}
	}
}

// eventually retries f, each attempt bounded by 2s, until it succeeds or
// timeout passes; then the test fails with f's last error.
func eventually(t *testing.T, timeout time.Duration, what string, f func(ctx context.Context) error) {
	t.Helper()
	testenv.Poll(t, timeout, what, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := f(ctx)
		return err == nil, fmt.Sprint(err)
	})
}

func newTestClient(t *testing.T, log *slog.Logger, endpoints []string, tls *TLSFiles) *clientv3.Client {
	t.Helper()
	var c *clientv3.Client
	eventually(t, 20*time.Second, "connect to "+strings.Join(endpoints, ","), func(ctx context.Context) error {
		var err error
		c, err = NewClient(ctx, ClientConfig{Endpoints: endpoints, TLS: tls, Logger: log})
		return err
	})
	t.Cleanup(func() { c.Close() })
	return c
}

func getValue(ctx context.Context, c *clientv3.Client, key string) (string, error) {
	resp, err := c.Get(ctx, key)
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", fmt.Errorf("%s: not found", key)
	}
	return string(resp.Kvs[0].Value), nil
}

// exerciseCluster starts the three members of cfgs, writes through each and
// reads every write through each, stops m3 and writes again, then restarts
// m3 from its data and reads the last write through it. It returns the
// running members.
func exerciseCluster(t *testing.T, log *slog.Logger, cfgs []MemberConfig, clientTLS *TLSFiles) []*runningMember {
	ms := make([]*runningMember, len(cfgs))
	for i := range cfgs {
		if HasData(cfgs[i].DataDir) {
			t.Fatalf("%s: fresh data dir has data", cfgs[i].Name)
		}
		ms[i] = startMember(t, cfgs[i])
	}
	waitReady(t, ms...)

	clients := make([]*clientv3.Client, len(ms))
	for i, r := range ms {
		clients[i] = newTestClient(t, log, r.m.Endpoints(), clientTLS)
		key, value := fmt.Sprintf("/test/k%d", i), fmt.Sprintf("v%d", i)
		eventually(t, 20*time.Second, "write through "+cfgs[i].Name, func(ctx context.Context) error {
			_, err := clients[i].Put(ctx, key, value)
			return err
		})
	}
	for i, c := range clients {
		for j := range clients {
			key, want := fmt.Sprintf("/test/k%d", j), fmt.Sprintf("v%d", j)
			eventually(t, 20*time.Second, fmt.Sprintf("read %s through %s", key, cfgs[i].Name), func(ctx context.Context) error {
				got, err := getValue(ctx, c, key)
				if err == nil && got != want {
					err = fmt.Errorf("%s = %q, want %q", key, got, want)
				}
				return err
			})
		}
	}

	// One member down: the other two are a quorum.
	if err := ms[2].stop(); err != nil {
		t.Fatalf("stop m3: %v", err)
	}
	both := append(ms[0].m.Endpoints(), ms[1].m.Endpoints()...)
	c12 := newTestClient(t, log, both, clientTLS)
	eventually(t, 30*time.Second, "write with m3 down", func(ctx context.Context) error {
		_, err := c12.Put(ctx, "/test/after", "written-without-m3")
		return err
	})

	// m3 comes back from its data and catches up.
	if !HasData(cfgs[2].DataDir) {
		t.Fatalf("m3's data dir %s has no member data after a run", cfgs[2].DataDir)
	}
	ms[2] = startMember(t, cfgs[2])
	waitReady(t, ms[2])
	c3 := newTestClient(t, log, ms[2].m.Endpoints(), clientTLS)
	eventually(t, 30*time.Second, "read through restarted m3", func(ctx context.Context) error {
		got, err := getValue(ctx, c3, "/test/after")
		if err == nil && got != "written-without-m3" {
			err = fmt.Errorf("got %q", got)
		}
		return err
	})
	eventually(t, 10*time.Second, "member list", func(ctx context.Context) error {
		resp, err := c3.MemberList(ctx)
		if err != nil {
			return err
		}
		var names []string
		for _, m := range resp.Members {
			names = append(names, m.Name)
		}
		if len(names) != 3 || !strings.Contains(strings.Join(names, ","), "m3") {
			return fmt.Errorf("members %v, want m1, m2, m3", names)
		}
		return nil
	})
	return ms
}

// TestEmbeddedCluster runs three members without TLS.
func TestEmbeddedCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	log := testLog(t)
	cfgs := clusterConfigs(t, log, 3, "shop", "")
	exerciseCluster(t, log, cfgs, nil)
	for _, c := range cfgs {
		for dir, want := range map[string]fs.FileMode{filepath.Dir(c.DataDir): 0o711, c.DataDir: 0o700} {
			if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != want {
				t.Errorf("%s: %v, %v; want mode %04o", dir, fi.Mode().Perm(), err, want)
			}
		}
	}
}

// prepareDataDir makes the missing directories above the data directory
// searchable by others, for a sibling that another user needs (PostgreSQL's
// data directory beside etcd's), and the data directory 0700 as etcd
// wants; it leaves existing directories as they are.
func TestPrepareDataDir(t *testing.T) {
	base := t.TempDir()
	mine := filepath.Join(base, "mine")
	if err := os.Mkdir(mine, 0o750); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{filepath.Join(base, "haven", "n1", "etcd"), filepath.Join(mine, "etcd")} {
		for range 2 { // the second time finds everything there
			if err := prepareDataDir(dir); err != nil {
				t.Fatalf("prepareDataDir(%s): %v", dir, err)
			}
		}
	}
	for dir, want := range map[string]fs.FileMode{
		filepath.Join(base, "haven"):               0o711,
		filepath.Join(base, "haven", "n1"):         0o711,
		filepath.Join(base, "haven", "n1", "etcd"): 0o700,
		mine:                        0o750,
		filepath.Join(mine, "etcd"): 0o700,
	} {
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %04o", dir, fi.Mode().Perm(), err, want)
		}
	}
	if err := prepareDataDir(filepath.Join(base, "haven", "n1", "etcd", "member")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := prepareDataDir(filepath.Join(base, "file", "etcd")); err == nil {
		t.Errorf("prepareDataDir under a file: no error")
	}
}

// TestEmbeddedClusterTLS runs three members with mutual TLS from
// certs.Generate, and checks that clients without the right TLS settings
// fail with errors that say what is wrong.
func TestEmbeddedClusterTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	log := testLog(t)
	dir := filepath.Join(t.TempDir(), "certs")
	cfgs := clusterConfigs(t, log, 3, "shop", dir)
	client := nodeTLS(dir, "m1")
	ms := exerciseCluster(t, log, cfgs, client)

	ep := ms[0].m.Endpoints()[0]
	u, err := url.Parse(ep)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		endpoint  string
		tls       *TLSFiles
		wantParts []string
	}{
		{"no CA", ep, &TLSFiles{Cert: client.Cert, Key: client.Key}, []string{ep, "not signed by the CA", "unknown authority"}},
		{"no client certificate", ep, &TLSFiles{CA: client.CA}, []string{ep, "requires a client certificate"}},
		{"no TLS", u.Host, nil, []string{"http://" + u.Host, "serves TLS"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(context.Background(), ClientConfig{Endpoints: []string{tc.endpoint}, TLS: tc.tls, DialTimeout: time.Second, Logger: log})
			if err == nil {
				c.Close()
				t.Fatal("NewClient succeeded")
			}
			t.Logf("error: %v", err)
			for _, part := range tc.wantParts {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q does not contain %q", err, part)
				}
			}
		})
	}
}

// TestMemberCannotReachPeers starts one member of three alone: Run must
// give up after the join timeout and name the absent peers.
func TestMemberCannotReachPeers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	log := testLog(t)
	cfgs := clusterConfigs(t, log, 3, "shop", "")
	cfgs[0].JoinTimeout = 2 * time.Second
	r := startMember(t, cfgs[0])
	err := r.wait(readyTimeout)
	if err == nil {
		t.Fatal("Run returned nil without peers")
	}
	t.Logf("error: %v", err)
	for _, part := range []string{"m1 could not join a quorum", "cannot reach peers", "m2 (", "m3 (",
		cfgs[1].InitialCluster["m2"], cfgs[2].InitialCluster["m3"], "connection refused", "haven agents run on m2, m3"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q does not contain %q", err, part)
		}
	}
	if strings.Contains(err.Error(), "did not stop") {
		t.Errorf("a member that never joined did not stop cleanly: %v", err)
	}
	select {
	case <-r.m.Ready():
		t.Error("Ready closed without a quorum")
	default:
	}
}

// TestMemberOtherClusterData restarts a member on data from another etcd
// cluster: Run must say so and name the data dir.
func TestMemberOtherClusterData(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	log := testLog(t)
	other := clusterConfigs(t, log, 3, "other", "")
	var ms []*runningMember
	for _, cfg := range other {
		ms = append(ms, startMember(t, cfg))
	}
	waitReady(t, ms...)
	for _, r := range ms {
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
	}

	// Same names and addresses, another cluster; m3 keeps the old data.
	shop := make([]MemberConfig, len(other))
	copy(shop, other)
	for i := range shop {
		shop[i].ClusterToken = "shop"
		if i < 2 {
			shop[i].DataDir = filepath.Join(t.TempDir(), shop[i].Name)
		}
	}
	shop[2].JoinTimeout = 3 * time.Second
	m1, m2 := startMember(t, shop[0]), startMember(t, shop[1])
	waitReady(t, m1, m2)
	m3 := startMember(t, shop[2])
	err := m3.wait(readyTimeout)
	if err == nil {
		t.Fatal("m3 joined with another cluster's data")
	}
	t.Logf("error: %v", err)
	for _, part := range []string{"belong to another", shop[2].DataDir, "m1 (cluster ID", "remove"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q does not contain %q", err, part)
		}
	}
}

// TestNewClientUnreachable checks the error of a client whose endpoints do
// not answer.
func TestNewClientUnreachable(t *testing.T) {
	addrs := freeAddrs(t, "127.0.0.1", "127.0.0.1")
	a, b := addrs[0], addrs[1]
	_, err := NewClient(context.Background(), ClientConfig{Endpoints: []string{a, b}, DialTimeout: 500 * time.Millisecond, Logger: testLog(t)})
	if err == nil {
		t.Fatal("NewClient succeeded without a server")
	}
	t.Logf("error: %v", err)
	for _, part := range []string{"no etcd endpoint answered", "http://" + a + ": cannot connect", "http://" + b + ": cannot connect", "connection refused"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q does not contain %q", err, part)
		}
	}
}

func TestNewMemberErrors(t *testing.T) {
	good := func() MemberConfig {
		return MemberConfig{
			Name:           "db1",
			DataDir:        "/var/lib/haven/etcd",
			InitialCluster: map[string]string{"db1": "198.18.1.21", "db2": "http://198.18.1.22:2380"},
			ClusterToken:   "shop",
		}
	}
	m, err := NewMember(good())
	if err != nil {
		t.Fatal(err)
	}
	if m.peer.String() != "http://198.18.1.21:2380" || m.Endpoints()[0] != "http://198.18.1.21:2379" ||
		m.tickMs != 50 || m.electionMs != 500 || m.joinTimeout != DefaultJoinTimeout {
		t.Errorf("defaults: peer %s, endpoints %v, tick %d, election %d, join %v", m.peer.String(), m.Endpoints(), m.tickMs, m.electionMs, m.joinTimeout)
	}
	cfg := good()
	cfg.ListenLocalhost = true
	cfg.TLS = &TLSFiles{CA: "ca.pem", Cert: "db1.pem", Key: "db1-key.pem"}
	cfg.InitialCluster = map[string]string{"db1": "198.18.1.21:2380"}
	m, err = NewMember(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(m.Endpoints(), ","); got != "https://198.18.1.21:2379,https://127.0.0.1:2379" {
		t.Errorf("endpoints with TLS and ListenLocalhost: %s", got)
	}

	for _, tc := range []struct {
		change func(*MemberConfig)
		want   string
	}{
		{func(c *MemberConfig) { c.Name = "" }, "name is empty"},
		{func(c *MemberConfig) { c.DataDir = "" }, "data dir is empty"},
		{func(c *MemberConfig) { c.ClusterToken = "" }, "cluster token is empty"},
		{func(c *MemberConfig) { c.Name = "db9" }, "does not include the member itself"},
		{func(c *MemberConfig) { c.PeerURL = "198.18.1.99:2380" }, "differs from the initial cluster's"},
		{func(c *MemberConfig) { c.InitialCluster = map[string]string{"db1": "https://198.18.1.21:2380"} }, "scheme https, want http"},
		{func(c *MemberConfig) { c.InitialCluster = map[string]string{"db1": "db1.example:2380"} }, "must be an IP address"},
		{func(c *MemberConfig) { c.ClientURL = "198.18.1.21:99999" }, "not between 1 and 65535"},
		{func(c *MemberConfig) { c.TLS = &TLSFiles{CA: "ca.pem"} }, "TLS needs a CA, a certificate and a key"},
		{func(c *MemberConfig) {
			c.HeartbeatInterval = 100 * time.Millisecond
			c.ElectionTimeout = 300 * time.Millisecond
		}, "at least 5 heartbeat intervals"},
		{func(c *MemberConfig) { c.HeartbeatInterval = 1500 * time.Microsecond }, "whole number of milliseconds"},
		{func(c *MemberConfig) { c.ElectionTimeout = time.Minute }, "etcd's limit"},
	} {
		cfg := good()
		tc.change(&cfg)
		_, err := NewMember(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", cfg, err, tc.want)
		}
	}
}

// TestZapToSlog checks that etcd's zap entries reach slog with their
// fields, at warn and above by default.
func TestZapToSlog(t *testing.T) {
	var buf bytes.Buffer
	lg := newZapLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), slog.LevelWarn)
	lg.Info("not shown")
	lg.Warn("Running http and grpc server on single port. This is not recommended for production.")
	lg.Named("raft").With(zap.String("local-member-id", "abc")).Warn("lost leader",
		zap.Error(errors.New("boom")), zap.Strings("peers", []string{"m2", "m3"}), zap.Int("term", 7))
	lg.Error("broken")
	lg.Error("setting up serving from embedded etcd failed.", zap.Error(errors.New("accept tcp 127.0.0.1:2379: use of closed network connection")))
	out := buf.String()
	for _, part := range []string{`level=WARN msg="lost leader" local-member-id=abc error=boom peers="[m2 m3]" term=7 logger=raft`, `level=ERROR msg=broken`} {
		if !strings.Contains(out, part) {
			t.Errorf("output lacks %q:\n%s", part, out)
		}
	}
	for _, part := range []string{"not shown", "single port", "setting up serving"} {
		if strings.Contains(out, part) {
			t.Errorf("output has %q:\n%s", part, out)
		}
	}
}

// TestForceNewCluster loses two of three members for good and forces the
// third into a cluster of its own: it must serve again with every key it
// had, and the two lost members, when they return on their old data
// together, must stop instead of forming the old quorum again (two
// members of three) behind its back.
func TestForceNewCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	log := testLog(t)
	cfgs := clusterConfigs(t, log, 3, "shop", "")
	ms := make([]*runningMember, len(cfgs))
	for i := range cfgs {
		ms[i] = startMember(t, cfgs[i])
	}
	waitReady(t, ms...)
	c1 := newTestClient(t, log, ms[0].m.Endpoints(), nil)
	eventually(t, 20*time.Second, "write before the loss", func(ctx context.Context) error {
		_, err := c1.Put(ctx, "/test/before", "kept")
		return err
	})
	for _, r := range ms {
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
	}

	// A force on an empty data dir has nothing to keep.
	empty := cfgs[0]
	empty.DataDir, empty.ForceNewCluster = filepath.Join(t.TempDir(), "m1"), true
	if err := startMember(t, empty).wait(readyTimeout); err == nil || !strings.Contains(err.Error(), "holds no member data") {
		t.Errorf("forcing a new cluster on an empty data dir: %v", err)
	}

	forced := cfgs[0]
	forced.ForceNewCluster = true
	alone := startMember(t, forced)
	waitReady(t, alone)
	eventually(t, 20*time.Second, "write to the forced cluster", func(ctx context.Context) error {
		got, err := getValue(ctx, c1, "/test/before")
		if err == nil && got != "kept" {
			err = fmt.Errorf("/test/before = %q after the force", got)
		}
		if err == nil {
			_, err = c1.Put(ctx, "/test/after", "alone")
		}
		return err
	})
	resp, err := c1.MemberList(context.Background())
	if err != nil || len(resp.Members) != 1 || resp.Members[0].Name != "m1" {
		t.Fatalf("members after the force: %v, %v; want m1 alone", resp, err)
	}

	// m2 and m3 come back at once, on their data: together they were a
	// quorum of the old cluster.
	for _, i := range []int{1, 2} {
		cfgs[i].JoinTimeout = readyTimeout
		ms[i] = startMember(t, cfgs[i])
	}
	for _, i := range []int{1, 2} {
		err := ms[i].wait(readyTimeout)
		select {
		case <-ms[i].m.Ready():
			t.Errorf("%s rejoined the old cluster after the force", cfgs[i].Name)
		default:
		}
		if err == nil || !strings.Contains(err.Error(), "was removed from its cluster: m1 lists only m1") {
			t.Errorf("%s after the force: Run returned %v; want it stopped as a removed member", cfgs[i].Name, err)
		}
		t.Logf("%s: %v", cfgs[i].Name, err)
	}
	// Started again both at once, with m1 down so that nobody tells them,
	// they stay out: their data dirs are marked.
	if err := alone.stop(); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		err := startMember(t, cfgs[i]).wait(readyTimeout)
		if err == nil || !strings.Contains(err.Error(), "does not start on its stale data") {
			t.Errorf("%s restarted after its removal: %v", cfgs[i].Name, err)
		}
	}
}

// TestKeepRetriesTheJoin starts one member of three alone, with a short
// join timeout: it cannot join, and Keep must start it again until the
// other two come and it joins them, instead of leaving it out for good.
func TestKeepRetriesTheJoin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	log := testLog(t)
	cfgs := clusterConfigs(t, log, 3, "shop", "")
	cfgs[0].JoinTimeout = time.Second
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var runs []*Member
	kept := make(chan error, 1)
	go func() {
		kept <- Keep(ctx, cfgs[0], func(m *Member) {
			mu.Lock()
			runs = append(runs, m)
			mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-kept:
			if err != nil {
				t.Errorf("Keep: %v", err)
			}
		case <-time.After(stopWait):
			t.Error("Keep did not return after its context ended")
		}
	})
	testenv.Poll(t, readyTimeout, "m1 started again after a failed join", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(runs) >= 2, fmt.Sprint(len(runs), " runs")
	})
	others := []*runningMember{startMember(t, cfgs[1]), startMember(t, cfgs[2])}
	waitReady(t, others...)
	testenv.Poll(t, readyTimeout, "m1 joins once the others are up", func() (bool, string) {
		mu.Lock()
		last := runs[len(runs)-1]
		n := len(runs)
		mu.Unlock()
		select {
		case <-last.Ready():
			return true, ""
		default:
			return false, fmt.Sprint(n, " runs")
		}
	})
}
