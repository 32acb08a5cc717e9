package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/lb"
	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testnet"
	"github.com/haven-ha/haven/internal/volume"
)

// volumeLab is a replicated volume on three storage nodes (st1-st3, each an
// etcd member, st1 also the balancer) mounted on two application nodes
// (app1, app2), each serving HTTP behind st1's balancer with the volume
// check.
type volumeLab struct {
	*nsLab
	cfg, base string
	addr      map[string]string
}

func needGluster(t *testing.T) {
	t.Helper()
	testenv.NeedCommand(t, "glusterd", "glusterfs-server")
	testenv.NeedCommand(t, "glusterfs", "glusterfs-client")
	_, err := os.Stat("/dev/fuse")
	testenv.Need(t, err == nil, "no /dev/fuse: the volume's mounts need FUSE (modprobe fuse)")
}

func newVolumeLab(t *testing.T) *volumeLab {
	testnet.Require(t)
	needGluster(t)
	base := testenv.SearchableDir(t)
	cfg := fmt.Sprintf(`cluster: vol
admin: {token_file: %[1]s/admin.token}
regions:
  lab:
    nodes:
      st1: {address: 198.18.1.11, zone: a}
      st2: {address: 198.18.1.12, zone: b}
      st3: {address: 198.18.1.13, zone: c}
      app1: {address: 198.18.1.14, zone: a}
      app2: {address: 198.18.1.15, zone: b}
coordination:
  members: [st1, st2, st3]
  data_dir: %[1]s/{node}/etcd
checks:
  files: {volume: {name: files}, interval: 500ms, timeout: 400ms, rise: 1, fall: 1}
balancers:
  web:
    nodes: [st1]
    listen: ":8080"
    check: files
    backends:
      - {address: 198.18.1.14:8081}
      - {address: 198.18.1.15:8081}
volumes:
  files:
    servers: [st1, st2, st3]
    brick: %[1]s/{node}/brick
    glusterd_dir: %[1]s/{node}/glusterd
    mount: {nodes: [app1, app2], path: %[1]s/mnt/files}
    copy: {repository: {url: "file://%[1]s/copy"}, every: 10s}
`, base)
	path := filepath.Join(base, "haven.yaml")
	for name, content := range map[string]string{"haven.yaml": cfg, "admin.token": "volume-token\n"} {
		if err := os.WriteFile(filepath.Join(base, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l := &volumeLab{nsLab: newNSLab(t, "st1", "st2", "st3", "app1", "app2"), cfg: path, base: base,
		addr: map[string]string{"st1": "198.18.1.11", "st2": "198.18.1.12", "st3": "198.18.1.13", "app1": "198.18.1.14", "app2": "198.18.1.15"}}
	for _, n := range []string{"app1", "app2"} {
		l.serveApp(n)
	}
	for _, n := range []string{"st1", "st2", "st3", "app1", "app2"} {
		l.start(n, path)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, n := range []string{"st1", "st2", "st3"} {
			for _, f := range []string{"glusterd.log", "glustershd.log"} {
				b, err := os.ReadFile(filepath.Join(base, n, "glusterd", "log", f))
				if err != nil {
					t.Logf("%s's %s: %v", n, f, err)
					continue
				}
				t.Logf("%s's %s (last lines):\n%s", n, f, tailLines(string(b), 30))
			}
		}
		if d := os.Getenv("HAVEN_VOLUME_LOGS"); d != "" {
			_ = exec.Command("cp", "-a", base, d).Run()
		}
	})
	return l
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// serveApp answers HTTP on node's port 8081: the application behind the
// balancer.
func (l *volumeLab) serveApp(node string) {
	ln, err := l.n.Host(node).Listen("tcp", l.addr[node]+":8081")
	if err != nil {
		l.t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, node) })}
	go srv.Serve(ln)
	l.t.Cleanup(func() { srv.Close() })
}

// get asks node's admin API for path, from st1's namespace.
func (l *volumeLab) get(node, path string, out any) (int, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: l.n.Host("st1").DialContext}}
	resp, err := c.Get("http://" + l.addr[node] + ":9900" + path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %s: %w", node, path, resp.Status, err)
		}
	}
	return resp.StatusCode, nil
}

// storage is the volume's state as server node sees it.
func (l *volumeLab) storage(node string) (*agent.VolumeStatus, error) {
	var vs []agent.VolumeStatus
	if _, err := l.get(node, "/api/v1/volumes", &vs); err != nil {
		return nil, err
	}
	if len(vs) != 1 || vs[0].Storage == nil {
		return nil, fmt.Errorf("%s: no storage status in %+v", node, vs)
	}
	return &vs[0], nil
}

// waitHealthy waits until the volume is started with every brick online,
// nothing to heal and nothing in split-brain, as node sees it, and checks
// that the bricks agree: no entry left in a brick's heal index.
func (l *volumeLab) waitHealthy(node string, timeout time.Duration) {
	l.t.Helper()
	since := time.Now() // a status gathered before the fault ended says nothing
	testenv.Poll(l.t, timeout, "volume files started, 3 bricks online, healed, no split-brain", func() (bool, string) {
		l.alive()
		vs, err := l.storage(node)
		if err != nil {
			return false, err.Error()
		}
		st := vs.Storage
		ok := st.At.After(since) && st.State == "Started" && st.ClientQuorum && st.Err == "" && st.HealPending == 0 && st.SplitBrain == 0
		var seen []string
		for _, b := range st.Bricks {
			ok = ok && b.Online && b.HealKnown
			seen = append(seen, fmt.Sprintf("%s online=%v pending=%d split=%d (index on disk: %d)", b.Node, b.Online, b.Pending, b.SplitBrain, l.indexEntries(b.Node)))
		}
		msg := fmt.Sprintf("%s at %s; %s; problem %q; error %q", st.State, st.At.Format("15:04:05.000"), strings.Join(seen, ", "), st.Problem, st.Err)
		if ok {
			l.t.Logf("healed as %s sees it at %s: %s", node, time.Now().Format("15:04:05.000"), msg)
		}
		return ok, msg
	})
	for _, n := range []string{"st1", "st2", "st3"} {
		if e := l.indexEntries(n); e != 0 {
			l.t.Errorf("%s reports the volume healed while %s's brick has %d entries in its heal index", node, n, e)
		}
	}
}

// indexEntries counts a brick's heal index on disk.
func (l *volumeLab) indexEntries(node string) int {
	n, _ := volume.IndexEntries(filepath.Join(l.base, node, "brick"))
	return n
}

// backendUp reports whether st1's balancer has node's backend up.
func (l *volumeLab) backendUp(node string) (bool, string) {
	var bs []lb.Status
	if _, err := l.get("st1", "/api/v1/balancers", &bs); err != nil {
		return false, err.Error()
	}
	for _, b := range bs {
		for _, be := range b.Backends {
			if strings.HasPrefix(be.Address, l.addr[node]+":") {
				last := ""
				if be.Health.Last != nil {
					last = be.Health.Last.Error
				}
				return be.Health.State.String() == "up", be.Health.State.String() + " " + last
			}
		}
	}
	return false, "no backend " + node
}

// waitBackend waits until node's backend is up (or down) in st1's pool.
func (l *volumeLab) waitBackend(node string, up bool, timeout time.Duration) string {
	l.t.Helper()
	var last string
	testenv.Poll(l.t, timeout, fmt.Sprintf("%s's backend up=%v in st1's pool", node, up), func() (bool, string) {
		l.alive()
		ok, seen := l.backendUp(node)
		last = seen
		return ok == up, seen
	})
	return last
}

// mountDir is the volume as node's agent has it mounted: its mount
// namespace's view of the mount point.
func (l *volumeLab) mountDir(node string) string {
	return filepath.Join("/proc", strconv.Itoa(l.agents[node].PID), "root", l.base, "mnt", "files")
}

// procs are the PIDs in node's namespace whose command is comm.
func (l *volumeLab) procs(node, comm string) []int {
	pids, err := l.n.Host(node).PIDs()
	if err != nil {
		l.t.Fatal(err)
	}
	var out []int
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		if err == nil && strings.TrimSpace(string(b)) == comm {
			out = append(out, pid)
		}
	}
	return out
}

// fileWriter creates files through one node's mount, each 16 KiB written
// and fsynced, and remembers each acknowledged one's digest.
type fileWriter struct {
	node, dir string

	mu       sync.Mutex
	acked    map[string][32]byte
	failed   []string
	n        int
	lastAck  time.Time
	longest  time.Duration // the longest time without an acknowledgement
	longestT time.Duration // the longest single write
	ackTimes []time.Time   // when each acknowledgement came
}

func newFileWriter(t *testing.T, node, mount, sub string) *fileWriter {
	dir := filepath.Join(mount, sub)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &fileWriter{node: node, dir: dir, acked: map[string][32]byte{}}
}

func content(name string) []byte {
	seed := sha256.Sum256([]byte(name))
	return bytes.Repeat(seed[:], 16<<10/len(seed))
}

// run writes until stop closes (at most limit files).
func (w *fileWriter) run(stop <-chan struct{}, limit int) {
	w.mu.Lock()
	w.lastAck = time.Now()
	w.mu.Unlock()
	for i := 0; i < limit; i++ {
		select {
		case <-stop:
			return
		default:
		}
		w.mu.Lock()
		w.n++
		name := fmt.Sprintf("%s-%06d", w.node, w.n)
		w.mu.Unlock()
		body := content(name)
		start := time.Now()
		err := writeSynced(filepath.Join(w.dir, name), body)
		took := time.Since(start)
		w.mu.Lock()
		w.longestT = max(w.longestT, took)
		if err != nil {
			w.failed = append(w.failed, fmt.Sprintf("%s: %v", name, err))
		} else {
			w.acked[name] = sha256.Sum256(body)
			w.ackTimes = append(w.ackTimes, time.Now())
			w.longest = max(w.longest, time.Since(w.lastAck))
			w.lastAck = time.Now()
		}
		w.mu.Unlock()
		// 25 files a second: a fault leaves hundreds to heal, not
		// thousands (the self-heal daemons heal some ten a second on
		// this kind of machine).
		time.Sleep(max(0, 40*time.Millisecond-took))
	}
}

func writeSynced(path string, body []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = f.Write(body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// writers runs a fileWriter on each of nodes while fault runs, and returns
// them once they have stopped.
func (l *volumeLab) writers(sub string, nodes []string, fault func()) []*fileWriter {
	l.t.Helper()
	var ws []*fileWriter
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, n := range nodes {
		w := newFileWriter(l.t, n, l.mountDir(n), sub)
		ws = append(ws, w)
		wg.Go(func() { w.run(stop, 100000) })
	}
	fault()
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		l.t.Fatal("the writers did not stop within 2 minutes: a mount hangs")
	}
	return ws
}

// verify checks that every acknowledged file is on every brick, identical.
func (l *volumeLab) verify(sub string, ws []*fileWriter) int {
	l.t.Helper()
	defer func() {
		if l.t.Failed() {
			for _, st := range []string{"st1", "st2", "st3"} {
				idx, _ := os.ReadDir(filepath.Join(l.base, st, "brick", ".glusterfs", "indices", "xattrop"))
				files, _ := os.ReadDir(filepath.Join(l.base, st, "brick", sub))
				l.t.Logf("%s's brick: %d files in %s, %d entries in its heal index", st, len(files), sub, len(idx))
			}
		}
	}()
	n := 0
	for _, w := range ws {
		for name, sum := range w.acked {
			for _, st := range []string{"st1", "st2", "st3"} {
				b, err := os.ReadFile(filepath.Join(l.base, st, "brick", sub, name))
				switch {
				case err != nil:
					l.t.Errorf("acknowledged file %s/%s is not on %s's brick: %v", sub, name, st, err)
				case sha256.Sum256(b) != sum:
					l.t.Errorf("acknowledged file %s/%s differs on %s's brick (%d bytes)", sub, name, st, len(b))
				}
			}
			n++
		}
	}
	return n
}

func (l *volumeLab) sleep(d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		l.alive()
		time.Sleep(100 * time.Millisecond)
	}
}

// TestVolume runs the replicated volume through a storage node's link cut,
// a storage node's GlusterFS killed, a partition with writers on both
// sides and an application node's mount lost, and checks that no
// acknowledged file is lost or split-brained and that the balancer follows
// the mounts.
func TestVolume(t *testing.T) {
	l := newVolumeLab(t)
	l.waitHealthy("st1", 2*time.Minute)
	for _, n := range []string{"app1", "app2"} {
		l.waitBackend(n, true, time.Minute)
	}

	var during window
	cut := l.writers("cut", []string{"app1", "app2"}, func() {
		l.sleep(2 * time.Second)
		if err := l.n.CutLink(l.n.Host("st3")); err != nil {
			t.Fatal(err)
		}
		during = lateInFault(10 * time.Second)
		l.sleep(10 * time.Second)
		if err := l.n.RestoreLink(l.n.Host("st3")); err != nil {
			t.Fatal(err)
		}
		l.sleep(2 * time.Second)
	})
	l.report("st3's link cut for 10s", cut, true, during)

	kill := l.writers("kill", []string{"app1", "app2"}, func() {
		l.sleep(2 * time.Second)
		var killed []int
		for _, comm := range []string{"glusterd", "glusterfsd", "glusterfs"} {
			for _, pid := range l.procs("st2", comm) {
				if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
					killed = append(killed, pid)
				}
			}
		}
		if len(killed) < 2 {
			t.Fatalf("killed %v on st2: want its glusterd and brick at least", killed)
		}
		during = lateInFault(8 * time.Second)
		l.sleep(8 * time.Second)
	})
	l.report("st2's glusterd, brick and self-heal daemon killed (kill -9)", kill, true, during)

	l.waitHealthy("st1", 3*time.Minute)
	n := l.verify("cut", cut) + l.verify("kill", kill)
	t.Logf("%d acknowledged files on every brick, identical; none in split-brain", n)

	// st3 and app2 cut off from st1, st2 and app1, a writer on each side:
	// the minority refuses writes, so no file changes on both sides.
	minority, majority := []string{"st3", "app2"}, []string{"st1", "st2", "app1"}
	part := l.writers("part", []string{"app1", "app2"}, func() {
		l.sleep(2 * time.Second)
		for _, a := range minority {
			for _, b := range majority {
				if err := l.n.Partition(l.n.Host(a), l.n.Host(b)); err != nil {
					t.Fatal(err)
				}
			}
		}
		during = lateInFault(10 * time.Second)
		l.sleep(10 * time.Second)
		if err := l.n.HealAll(); err != nil {
			t.Fatal(err)
		}
		l.sleep(3 * time.Second)
	})
	l.report("st3 and app2 partitioned from st1, st2 and app1 for 10s", part[:1], true, during)
	l.report("st3 and app2 partitioned from st1, st2 and app1 for 10s", part[1:], false, window{})
	if len(part[1].failed) == 0 {
		t.Errorf("app2, with only st3's brick, had every write acknowledged during the partition: the minority must refuse writes (client quorum)")
	}
	l.waitHealthy("st1", 3*time.Minute)
	t.Logf("%d acknowledged files on every brick after the partition; none in split-brain", l.verify("part", part))

	// app1's client frozen: its mount hangs, its backend leaves the pool;
	// thawed, it returns. Killed: haven mounts the volume again.
	clients := l.procs("app1", "glusterfs")
	if len(clients) != 1 {
		t.Fatalf("app1 runs %d glusterfs clients (%v), want 1", len(clients), clients)
	}
	start := time.Now()
	if err := syscall.Kill(clients[0], syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	why := l.waitBackend("app1", false, 30*time.Second)
	t.Logf("app1's mount frozen: its backend left st1's pool after %s (%s)", time.Since(start).Round(time.Millisecond), why)
	if err := syscall.Kill(clients[0], syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	l.waitBackend("app1", true, 30*time.Second)
	if up, _ := l.backendUp("app2"); !up {
		t.Errorf("app2's backend is down while only app1's mount was lost")
	}
	start = time.Now()
	if err := syscall.Kill(clients[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.Poll(t, time.Minute, "app1's volume mounted again by its agent and usable", func() (bool, string) {
		var vs []agent.VolumeStatus
		if _, err := l.get("app1", "/api/v1/volumes", &vs); err != nil || len(vs) != 1 || vs[0].Mount == nil {
			return false, fmt.Sprintf("%+v %v", vs, err)
		}
		m := vs[0].Mount
		code, _ := l.get("app1", "/api/v1/volumes/files/mount", nil)
		return m.Restarts >= 1 && code == http.StatusOK, fmt.Sprintf("remounts %d, pid %d, mount endpoint %d, %s", m.Restarts, m.PID, code, m.Why)
	})
	l.waitBackend("app1", true, 30*time.Second)
	t.Logf("app1's client killed: mounted again and back in the pool after %s", time.Since(start).Round(time.Millisecond))

	// The copy for another region: a pass after every write above holds
	// every acknowledged file, and haven volume restore writes them back.
	written := time.Now()
	var lag time.Duration
	testenv.Poll(t, 2*time.Minute, "a complete copy pass started after the last write", func() (bool, string) {
		var seen []string
		for _, n := range []string{"app1", "app2"} {
			var vs []agent.VolumeStatus
			if _, err := l.get(n, "/api/v1/volumes", &vs); err != nil || len(vs) != 1 || vs[0].Copy == nil {
				seen = append(seen, fmt.Sprintf("%s: %+v %v", n, vs, err))
				continue
			}
			c := vs[0].Copy
			seen = append(seen, fmt.Sprintf("%s: copying %v, last pass %s, %d files, %q", n, c.Copying, c.LastPass.Format("15:04:05.000"), c.Files, c.Err))
			if c.Copying && c.LastPass.After(written) {
				lag = c.Lag
				return true, ""
			}
		}
		return false, strings.Join(seen, "; ")
	})
	restored := filepath.Join(l.base, "restored")
	if out, err := l.cli(l.cfg, "volume", "restore", "files", "--to", restored); err != nil {
		t.Fatalf("haven volume restore: %v\n%s", err, out)
	} else {
		t.Logf("copy's lag %s when read; %s", lag.Round(time.Millisecond), strings.TrimSpace(out))
	}
	inCopy := 0
	for sub, ws := range map[string][]*fileWriter{"cut": cut, "kill": kill, "part": part} {
		for _, w := range ws {
			for name, sum := range w.acked {
				b, err := os.ReadFile(filepath.Join(restored, sub, name))
				if err != nil || sha256.Sum256(b) != sum {
					t.Errorf("acknowledged file %s/%s is not in the restored copy, identical: %v", sub, name, err)
					continue
				}
				inCopy++
			}
		}
	}
	if _, err := os.Stat(filepath.Join(restored, ".haven")); err == nil {
		t.Errorf("the copy holds haven's probe files")
	}
	t.Logf("%d acknowledged files restored from the copy, identical", inCopy)

	out, err := l.cli(l.cfg, "volume", "status")
	if err != nil {
		t.Fatalf("haven volume status: %v\n%s", err, out)
	}
	// Heals may be pending: app1's killed client left its probe file's
	// last write half done.
	for _, want := range []string{"volume files: Started; client quorum yes, server quorum yes; heal pending ", ", split-brain 0 (as st1 saw it", "mount app1", "mount app2", "copy to file://"} {
		if !strings.Contains(out, want) {
			t.Errorf("haven volume status does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "NOT USABLE") {
		t.Errorf("haven volume status has a mount not usable:\n%s", out)
	}
}

// window is a stretch of a fault; the zero window is none.
type window struct{ from, to time.Time }

// lateInFault is the second half of a fault of length d that starts now:
// a write acknowledged then was acknowledged without the lost server.
// With GlusterFS's own ping timeout (42s) no write is, in a fault of
// seconds; with the volume's (2s) writes go on long before its middle.
func lateInFault(d time.Duration) window {
	now := time.Now()
	return window{now.Add(d / 2), now.Add(d)}
}

// report logs what the writers saw; with noFailures it fails the test on
// a refused write, and with a window on a writer that had no write
// acknowledged in it.
func (l *volumeLab) report(fault string, ws []*fileWriter, noFailures bool, during window) {
	t := l.t
	t.Helper()
	for _, w := range ws {
		w.mu.Lock()
		t.Logf("%s: %s: %d files acknowledged, %d refused; longest without an acknowledgement %s, longest write %s",
			fault, w.node, len(w.acked), len(w.failed), w.longest.Round(time.Millisecond), w.longestT.Round(time.Millisecond))
		if noFailures && len(w.failed) > 0 {
			t.Errorf("%s: %s: %d writes refused, first: %s", fault, w.node, len(w.failed), w.failed[0])
		}
		if !during.from.IsZero() && !slices.ContainsFunc(w.ackTimes, func(at time.Time) bool { return at.After(during.from) && at.Before(during.to) }) {
			t.Errorf("%s: %s: no write acknowledged in the second half of the fault: the client did not go on without the lost server", fault, w.node)
		}
		w.mu.Unlock()
	}
}
