package volume

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// glfshealPaths are where distributions install glfsheal, the helper
// `gluster volume heal NAME info` runs: a client of the volume that reads
// each brick's index of pending heals. The CLI does not pass it a glusterd
// socket other than the default, so haven runs it itself.
var glfshealPaths = []string{
	"/usr/lib/*/glusterfs/glfsheal", // Debian, Ubuntu
	"/usr/libexec/glusterfs/glfsheal",
	"/usr/lib/glusterfs/glfsheal",
}

// findGlfsheal returns the first installed glfsheal.
func findGlfsheal() (string, error) {
	for _, pattern := range glfshealPaths {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			return m[0], nil
		}
	}
	return "", fmt.Errorf("glfsheal is not installed (looked in %s): install glusterfs-server", strings.Join(glfshealPaths, ", "))
}

// cliTimeout bounds one gluster command: glusterd answers in milliseconds,
// or waits for a peer that does not answer (a partition) until its own
// timeout (minutes). A status that cannot be read within it is reported
// as such, and the next reconciliation tries again.
const cliTimeout = 10 * time.Second

// CLI runs the gluster command line against one glusterd, through its
// socket: every command is glusterd's own, so haven changes the volume the
// way an operator would, and a human reading cmd_history.log sees it.
type CLI struct {
	// Sock is glusterd's command socket.
	Sock string
	// Bin is the gluster program (default: gluster on PATH).
	Bin string
}

// errNoVolume is what VolumeInfo returns for a volume glusterd does not
// know.
var errNoVolume = errors.New("volume does not exist")

func (c *CLI) command(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	bin := c.Bin
	if bin == "" {
		bin = "gluster"
	}
	all := append([]string{"--mode=script", "--glusterd-sock=" + c.Sock}, args...)
	cmd := exec.CommandContext(ctx, bin, all...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String() + " " + string(out))
		if ctx.Err() != nil {
			return out, fmt.Errorf("gluster %s: no answer from glusterd within %s", strings.Join(args, " "), cliTimeout)
		}
		return out, fmt.Errorf("gluster %s: %w: %s", strings.Join(args, " "), err, msg)
	}
	return out, nil
}

// cliOutput is the envelope of every --xml answer.
type cliOutput struct {
	OpRet    int    `xml:"opRet"`
	OpErrno  int    `xml:"opErrno"`
	OpErrstr string `xml:"opErrstr"`
	Peers    []struct {
		UUID      string `xml:"uuid"`
		Hostname  string `xml:"hostname"`
		Connected int    `xml:"connected"`
	} `xml:"peerStatus>peer"`
	VolInfo []struct {
		Name         string `xml:"name"`
		StatusStr    string `xml:"statusStr"`
		TypeStr      string `xml:"typeStr"`
		ReplicaCount int    `xml:"replicaCount"`
		ArbiterCount int    `xml:"arbiterCount"`
		Bricks       []struct {
			Name      string `xml:"name"`
			IsArbiter int    `xml:"isArbiter"`
		} `xml:"bricks>brick"`
		Options []struct {
			Name  string `xml:"name"`
			Value string `xml:"value"`
		} `xml:"options>option"`
	} `xml:"volInfo>volumes>volume"`
	VolStatus []struct {
		Nodes []struct {
			Hostname string `xml:"hostname"`
			Path     string `xml:"path"`
			PeerID   string `xml:"peerid"`
			Status   int    `xml:"status"`
			Port     string `xml:"port"`
			PID      int    `xml:"pid"`
		} `xml:"node"`
	} `xml:"volStatus>volumes>volume"`
}

func (c *CLI) xml(ctx context.Context, args ...string) (*cliOutput, error) {
	out, err := c.command(ctx, append(args, "--xml")...)
	return decodeCLI(out, err, args)
}

// decodeCLI reads a --xml answer; err is the command's own.
func decodeCLI(out []byte, err error, args []string) (*cliOutput, error) {
	var v cliOutput
	if xerr := xml.Unmarshal(out, &v); xerr != nil {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("gluster %s: unreadable answer: %w", strings.Join(args, " "), xerr)
	}
	if v.OpRet != 0 {
		msg := v.OpErrstr
		if msg == "" {
			msg = fmt.Sprintf("error %d", v.OpErrno)
		}
		return &v, fmt.Errorf("gluster %s: %s", strings.Join(args, " "), msg)
	}
	return &v, nil
}

// Peer is a member of glusterd's trusted pool, as this node sees it.
type Peer struct {
	Hostname  string `json:"hostname"`
	Connected bool   `json:"connected"`
	// Self is this node (glusterd lists itself as localhost).
	Self bool `json:"self,omitempty"`
}

// Pool lists the trusted pool, this node included.
func (c *CLI) Pool(ctx context.Context) ([]Peer, error) {
	v, err := c.xml(ctx, "pool", "list")
	if err != nil {
		return nil, err
	}
	return peersOf(v), nil
}

func peersOf(v *cliOutput) []Peer {
	var out []Peer
	for _, p := range v.Peers {
		out = append(out, Peer{Hostname: p.Hostname, Connected: p.Connected == 1, Self: p.Hostname == "localhost"})
	}
	return out
}

// Probe adds host to the trusted pool.
func (c *CLI) Probe(ctx context.Context, host string) error {
	_, err := c.command(ctx, "peer", "probe", host)
	return err
}

// Info is a volume's definition.
type Info struct {
	Name    string
	Status  string // Created, Started, Stopped
	Type    string // Replicate, ...
	Replica int
	Arbiter bool
	Bricks  []string // HOST:PATH, in replica order
	Options map[string]string
}

// VolumeInfo returns volume name's definition, or errNoVolume.
func (c *CLI) VolumeInfo(ctx context.Context, name string) (Info, error) {
	v, err := c.xml(ctx, "volume", "info", name)
	if err != nil {
		if v != nil && strings.Contains(v.OpErrstr, "does not exist") {
			return Info{}, errNoVolume
		}
		return Info{}, err
	}
	if len(v.VolInfo) == 0 {
		return Info{}, errNoVolume
	}
	return infoOf(v), nil
}

func infoOf(v *cliOutput) Info {
	vi := v.VolInfo[0]
	info := Info{Name: vi.Name, Status: vi.StatusStr, Type: vi.TypeStr, Replica: vi.ReplicaCount,
		Arbiter: vi.ArbiterCount > 0, Options: map[string]string{}}
	for _, b := range vi.Bricks {
		info.Bricks = append(info.Bricks, b.Name)
	}
	for _, o := range vi.Options {
		info.Options[o.Name] = o.Value
	}
	return info
}

// Create defines a replica volume over bricks (HOST:PATH), the last one an
// arbiter when arbiter is set. force: a brick may be on the root file
// system, which GlusterFS otherwise refuses (a test's, or a small site's).
func (c *CLI) Create(ctx context.Context, name string, bricks []string, arbiter bool) error {
	args := []string{"volume", "create", name}
	if arbiter {
		args = append(args, "replica", strconv.Itoa(len(bricks)-1), "arbiter", "1")
	} else {
		args = append(args, "replica", strconv.Itoa(len(bricks)))
	}
	args = append(args, bricks...)
	_, err := c.command(ctx, append(args, "force")...)
	return err
}

// Set sets one volume option.
func (c *CLI) Set(ctx context.Context, name, key, value string) error {
	_, err := c.command(ctx, "volume", "set", name, key, value)
	return err
}

// Start starts the volume's bricks; with force it starts the bricks that
// are not running of a started volume (GlusterFS does not restart a dead
// brick by itself).
func (c *CLI) Start(ctx context.Context, name string, force bool) error {
	args := []string{"volume", "start", name}
	if force {
		args = append(args, "force")
	}
	_, err := c.command(ctx, args...)
	return err
}

// Process is one of a volume's processes as glusterd reports it: a brick,
// or a node's self-heal daemon.
type Process struct {
	// Host is the brick's server; for a self-heal daemon, its node
	// ("localhost" for this one).
	Host string `json:"host"`
	// Path is the brick's directory ("" for a self-heal daemon).
	Path   string `json:"path,omitempty"`
	Online bool   `json:"online"`
	PID    int    `json:"pid,omitempty"`
	Port   int    `json:"port,omitempty"`
}

// Status lists the volume's bricks and self-heal daemons.
func (c *CLI) Status(ctx context.Context, name string) (bricks, shds []Process, err error) {
	v, err := c.xml(ctx, "volume", "status", name)
	if err != nil {
		return nil, nil, err
	}
	bricks, shds = processesOf(v)
	return bricks, shds, nil
}

func processesOf(v *cliOutput) (bricks, shds []Process) {
	for _, vol := range v.VolStatus {
		for _, n := range vol.Nodes {
			p := Process{Host: n.Hostname, Path: n.Path, Online: n.Status == 1, PID: max(n.PID, 0)}
			p.Port, _ = strconv.Atoi(n.Port)
			if n.Hostname == "Self-heal Daemon" {
				p.Host, p.Path = n.Path, ""
				shds = append(shds, p)
				continue
			}
			bricks = append(bricks, p)
		}
	}
	return bricks, shds
}

// Heal starts healing: the entries the bricks' indexes list, or with full
// every file (after a brick was replaced or wiped).
func (c *CLI) Heal(ctx context.Context, name string, full bool) error {
	args := []string{"volume", "heal", name}
	if full {
		args = append(args, "full")
	}
	_, err := c.command(ctx, args...)
	return err
}

// HealCount is one brick's entries that wait for a heal (a copy behind its
// replicas) and those in split-brain.
type HealCount struct {
	Brick string `json:"brick"` // HOST:PATH
	// Known: the brick's count was read (its brick and self-heal daemon
	// answered).
	Known      bool `json:"known"`
	Pending    int  `json:"pending"`
	SplitBrain int  `json:"split_brain"`

	n int // the count parseHealCounts read, for the caller to place
}

// HealPending counts each brick's entries waiting for a heal, from the
// self-heal daemons' indexes through glusterd: a count of index files,
// cheap at any size.
func (c *CLI) HealPending(ctx context.Context, name string) ([]HealCount, error) {
	out, err := c.command(ctx, "volume", "heal", name, "statistics", "heal-count")
	if err != nil {
		return nil, err
	}
	counts := parseHealCounts(out, "Number of entries")
	for i := range counts {
		counts[i].Pending = counts[i].n
	}
	return counts, nil
}

// SplitBrain counts each brick's entries in split-brain with glfsheal, a
// client of the volume that looks at every pending entry: run it only when
// something is pending (an entry in split-brain is one that stays
// pending).
func (c *CLI) SplitBrain(ctx context.Context, name string) ([]HealCount, error) {
	bin, err := findGlfsheal()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, name, "info-summary", "glusterd-sock", c.Sock)
	out, err := cmd.Output()
	counts := parseHealCounts(out, "Number of entries in split-brain")
	if err != nil && len(counts) == 0 {
		return nil, fmt.Errorf("glfsheal %s info-summary: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	for i := range counts {
		counts[i].SplitBrain = counts[i].n
	}
	return counts, nil
}

// parseHealCounts reads the count named key under each brick of a heal
// report, such as heal-count's
//
//	Brick 198.18.9.1:/bricks/files
//	Number of entries: 3
//
// or glfsheal's info-summary ("Number of entries in split-brain: 0"),
// into n. A brick whose count is not a number ("-": not connected) is not
// Known.
func parseHealCounts(out []byte, key string) []HealCount {
	var counts []HealCount
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if b, ok := strings.CutPrefix(line, "Brick "); ok {
			counts = append(counts, HealCount{Brick: b})
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != key || len(counts) == 0 {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
			cur := &counts[len(counts)-1]
			cur.Known, cur.n = true, n
		}
	}
	return counts
}
