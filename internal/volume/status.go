package volume

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Status is a volume's state as one of its storage nodes sees it.
type Status struct {
	Volume string `json:"volume"`
	// State is glusterd's (Created, Started, Stopped), or "unknown"
	// while glusterd does not answer.
	State  string        `json:"state"`
	Bricks []BrickStatus `json:"bricks"`
	// Peers are the other servers of the pool and whether this node's
	// glusterd reaches them.
	Peers []Peer `json:"peers"`
	// ClientQuorum: a majority of the bricks is online, so clients
	// write. ServerQuorum: this node's glusterd reaches a majority of
	// the pool, so it keeps its brick running.
	ClientQuorum bool `json:"client_quorum"`
	ServerQuorum bool `json:"server_quorum"`
	// HealPending and SplitBrain are the most any brick lists: the
	// entries waiting for a heal, and those GlusterFS cannot heal alone.
	HealPending int `json:"heal_pending"`
	SplitBrain  int `json:"split_brain"`
	// Reporter: this node gathered the whole volume's state (bricks,
	// heals); another server's status has only its own brick.
	Reporter bool `json:"reporter"`
	// BrickRestarts counts the times this node started its dead brick.
	BrickRestarts int `json:"brick_restarts"`
	// Problem is why the volume is not as configured, if it is not.
	Problem string `json:"problem,omitempty"`
	// Err is what could not be read.
	Err string    `json:"error,omitempty"`
	At  time.Time `json:"at"`
}

// BrickStatus is one brick's state.
type BrickStatus struct {
	Brick
	Online bool `json:"online"`
	PID    int  `json:"pid,omitempty"`
	Port   int  `json:"port,omitempty"`
	// SelfHeal: the node's self-heal daemon runs.
	SelfHeal   bool `json:"self_heal"`
	HealKnown  bool `json:"heal_known"`
	Pending    int  `json:"heal_pending"`
	SplitBrain int  `json:"split_brain"`
}

// gatherStatus asks glusterd (and glfsheal) about the volume. What cannot
// be read is left at its zero value and said in Err.
// self is this node's address: glusterd names its own self-heal daemon
// "localhost".
// Only the reporter (see reporter) asks glusterd for every brick and the
// pending heals; the others report their own brick, from rundir.
func gatherStatus(ctx context.Context, cli *CLI, volume, self, rundir string, bricks []Brick) Status {
	st := gatherFromGlusterd(ctx, cli, volume, self, rundir, bricks)
	if st.State == "Started" {
		st.addLocalIndex(self, selfPath(bricks, self))
	}
	return st
}

// gatherFromGlusterd is gatherStatus but for this node's own index.
func gatherFromGlusterd(ctx context.Context, cli *CLI, volume, self, rundir string, bricks []Brick) Status {
	st := Status{Volume: volume, State: "unknown", At: time.Now()}
	for _, b := range bricks {
		st.Bricks = append(st.Bricks, BrickStatus{Brick: b})
	}
	fail := func(err error) {
		if st.Err == "" {
			st.Err = err.Error()
		}
	}
	info, err := cli.VolumeInfo(ctx, volume)
	switch {
	case err == errNoVolume:
		st.State = "missing"
		return st
	case err != nil:
		fail(err)
		return st
	}
	st.State = info.Status
	pool, err := cli.Pool(ctx)
	if err != nil {
		fail(err)
		return st
	}
	connected := 0
	for _, p := range pool {
		if p.Connected {
			connected++
		}
		if !p.Self {
			st.Peers = append(st.Peers, p)
		}
	}
	st.ServerQuorum = 2*connected > len(pool)
	st.Reporter = reporter(bricks, self, pool) == self
	if !st.Reporter {
		// Only this node's brick, from its pid file: glusterd's volume
		// status and heal counts take the volume's cluster-wide lock,
		// and every server asking every few seconds would make the
		// operators' commands fail with "another transaction is in
		// progress".
		if b := st.brick(Brick{Address: self, Path: selfPath(bricks, self)}.Spec()); b != nil {
			b.PID = brickPID(rundir, b.Path)
			b.Online = b.PID != 0
		}
		return st
	}
	procs, shds, err := cli.Status(ctx, volume)
	if err != nil {
		fail(err)
	}
	online := 0
	for i := range st.Bricks {
		b := &st.Bricks[i]
		for _, p := range procs {
			if p.Host == b.Address && p.Path == b.Path {
				b.Online, b.PID, b.Port = p.Online, p.PID, p.Port
			}
		}
		for _, p := range shds {
			if p.Host == b.Address || p.Host == "localhost" && b.Address == self {
				b.SelfHeal = p.Online
			}
		}
		if b.Online {
			online++
		}
	}
	st.ClientQuorum = 2*online > len(st.Bricks)
	if st.State != "Started" || online == 0 {
		return st
	}
	heals, err := cli.HealPending(ctx, volume)
	if err != nil {
		fail(err)
	}
	for _, h := range heals {
		if b := st.brick(h.Brick); b != nil && h.Known {
			b.HealKnown, b.Pending = true, h.Pending
			st.HealPending = max(st.HealPending, h.Pending)
		}
	}
	return st
}

// addLocalIndex counts this node's brick's heal index itself: the entries
// its copies wait for, read from the brick (exact and cheap), in case the
// self-heal daemons' count through glusterd is missing or behind.
func (st *Status) addLocalIndex(self, path string) {
	b := st.brick(Brick{Address: self, Path: path}.Spec())
	if b == nil {
		return
	}
	n, err := IndexEntries(path)
	if err != nil {
		return
	}
	b.HealKnown = true
	b.Pending = max(b.Pending, n)
	st.HealPending = max(st.HealPending, b.Pending)
}

// IndexEntries counts the entries of the heal index of the brick in
// directory brick (.glusterfs/indices/xattrop: a link per file or directory
// that a replica missed, beside the index's own xattrop-UUID file): 0 on
// every brick is a healed volume.
func IndexEntries(brick string) (int, error) {
	ents, err := os.ReadDir(filepath.Join(brick, ".glusterfs", "indices", "xattrop"))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "xattrop-") {
			n++
		}
	}
	return n, nil
}

// reporter is the server that gathers the volume's whole state: the first
// of bricks (the servers' order) that is self or a peer self's glusterd
// reaches. Servers that see the same pool agree on it; during a partition
// each side has its own.
func reporter(bricks []Brick, self string, pool []Peer) string {
	for _, b := range bricks {
		if b.Address == self || slices.ContainsFunc(pool, func(p Peer) bool { return p.Hostname == b.Address && p.Connected }) {
			return b.Address
		}
	}
	return self
}

func selfPath(bricks []Brick, self string) string {
	for _, b := range bricks {
		if b.Address == self {
			return b.Path
		}
	}
	return ""
}

// brickPID finds the running brick process of path among the pid files
// glusterd keeps under rundir, or returns 0.
func brickPID(rundir, path string) int {
	files, _ := filepath.Glob(filepath.Join(rundir, "vols", "*", "*.pid"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 || !alive(pid) {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if i := slices.Index(args, "--brick-name"); i >= 0 && i+1 < len(args) && args[i+1] == path {
			return pid
		}
	}
	return 0
}

// brick returns the brick named spec (HOST:PATH), or nil.
func (st *Status) brick(spec string) *BrickStatus {
	for i := range st.Bricks {
		if st.Bricks[i].Spec() == spec {
			return &st.Bricks[i]
		}
	}
	return nil
}

// countSplitBrain adds the split-brain counts to a status with pending
// heals, and reports whether it could count them.
func (st *Status) countSplitBrain(ctx context.Context, cli *CLI) bool {
	counts, err := cli.SplitBrain(ctx, st.Volume)
	if err != nil {
		if st.Err == "" {
			st.Err = err.Error()
		}
		return false
	}
	for _, h := range counts {
		if b := st.brick(h.Brick); b != nil && h.Known {
			b.SplitBrain = h.SplitBrain
			st.SplitBrain = max(st.SplitBrain, h.SplitBrain)
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
