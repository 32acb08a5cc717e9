package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/netlab"
	"github.com/haven-ha/haven/internal/volume"
)

// The hosts of every cell: three storage servers and two application
// nodes, 198.18.1.11 to .15.
var (
	servers = []string{"st1", "st2", "st3"}
	clients = []string{"app1", "app2"}
	hosts   = append(append([]string(nil), servers...), clients...)
)

func addr(host string) string {
	for i, h := range hosts {
		if h == host {
			return "198.18.1." + strconv.Itoa(11+i)
		}
	}
	panic("no host " + host)
}

// cell is one target's volume on a fresh network: the servers' daemons
// and a mount on each application node.
type cell struct {
	b      *bench
	target string
	net    *netlab.Net
	dir    string
	procs  map[string]*netlab.Proc // the peer's glusterd, or haven's agent, by host
	mounts map[string]*netlab.Proc // the process whose mount namespace has the mount, by client
}

// brick is server's brick directory, the same for both targets.
func (c *cell) brick(server string) string { return filepath.Join(c.dir, server, "brick") }

// mountDir is the volume as client's mount has it: its mount namespace's
// view of the mount point.
func (c *cell) mountDir(client string) string {
	return filepath.Join("/proc", strconv.Itoa(c.mounts[client].PID), "root", c.dir, "mnt")
}

// startCell builds the network and the target's volume, and waits until
// both mounts take a write.
func (b *bench) startCell(ctx context.Context, target, label string) (_ *cell, err error) {
	dir := filepath.Join(b.dir, label)
	if err := os.MkdirAll(filepath.Join(dir, "mnt"), 0o755); err != nil {
		return nil, err
	}
	n, err := netlab.New(ctx, netlab.Options{Hosts: hosts})
	if err != nil {
		return nil, err
	}
	b.setNet(n)
	c := &cell{b: b, target: target, net: n, dir: dir, procs: map[string]*netlab.Proc{}, mounts: map[string]*netlab.Proc{}}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	if target == "haven" {
		err = c.startHaven(ctx)
	} else {
		err = c.startPeer(ctx)
	}
	if err != nil {
		return nil, err
	}
	for _, cl := range clients {
		if err := c.waitWritable(ctx, cl, 2*time.Minute); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *cell) close() {
	c.b.closeNet()
	// Bricks hold GlusterFS's hard links and extended attributes: gone
	// with the directory, after the processes that used them.
	_ = os.RemoveAll(c.dir)
}

// startPeer runs the guide's GlusterFS by hand: glusterd on each server,
// the pool probed from st1, a replica 3 volume created with GlusterFS's
// defaults, and each client mounting it with the servers as volfile
// servers (mount -t glusterfs st1:/files with backup-volfile-servers).
func (c *cell) startPeer(ctx context.Context) error {
	for _, s := range servers {
		if err := c.startGlusterd(ctx, s); err != nil {
			return err
		}
	}
	gluster := func(args ...string) error {
		sock := filepath.Join(c.dir, "st1", "glusterd", "run", "glusterd.sock")
		var out []byte
		var err error
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			cmd := c.net.Host("st1").Command(ctx, "gluster", append([]string{"--mode=script", "--glusterd-sock=" + sock}, args...)...)
			if out, err = cmd.CombinedOutput(); err == nil {
				return nil
			}
			if !harness.Sleep(ctx, 500*time.Millisecond) {
				break
			}
		}
		return fmt.Errorf("gluster %s: %v: %s", strings.Join(args, " "), err, out)
	}
	for _, s := range servers[1:] {
		if err := gluster("peer", "probe", addr(s)); err != nil {
			return err
		}
	}
	var bricks []string
	for _, s := range servers {
		bricks = append(bricks, addr(s)+":"+c.brick(s))
	}
	if err := gluster(append(append([]string{"volume", "create", "files", "replica", "3"}, bricks...), "force")...); err != nil {
		return err
	}
	if err := gluster("volume", "start", "files"); err != nil {
		return err
	}
	for _, cl := range clients {
		args := []string{"-N", "--volfile-id=files", "-l", filepath.Join(c.dir, cl+"-mount.log")}
		for _, s := range servers {
			args = append(args, "--volfile-server="+addr(s))
		}
		p, err := c.net.Host(cl).Start(ctx, "glusterfs", append(args, filepath.Join(c.dir, "mnt"))...)
		if err != nil {
			return err
		}
		c.mounts[cl] = p
	}
	return nil
}

// startHaven runs haven's agents with a volume of three servers mounted
// on both clients; etcd's members are the servers.
func (c *cell) startHaven(ctx context.Context) error {
	cfg := fmt.Sprintf(`cluster: benchvol
regions:
  lab:
    nodes:
      st1: {address: %s, zone: a}
      st2: {address: %s, zone: b}
      st3: {address: %s, zone: c}
      app1: {address: %s, zone: a}
      app2: {address: %s, zone: b}
coordination:
  members: [st1, st2, st3]
  data_dir: %s/{node}/etcd
volumes:
  files:
    servers: [st1, st2, st3]
    brick: %s/{node}/brick
    glusterd_dir: %s/{node}/glusterd
    mount: {nodes: [app1, app2], path: %s/mnt}
`, addr("st1"), addr("st2"), addr("st3"), addr("app1"), addr("app2"), c.dir, c.dir, c.dir, c.dir)
	path := filepath.Join(c.dir, "haven.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	for _, h := range hosts {
		p, err := c.net.Host(h).Start(ctx, c.b.havenBin, "agent", "-c", path, "-n", h)
		if err != nil {
			return err
		}
		c.procs[h] = p
	}
	for _, cl := range clients {
		c.mounts[cl] = c.procs[cl]
	}
	return nil
}

// waitWritable waits until a file written and synced through client's
// mount is acknowledged.
func (c *cell) waitWritable(ctx context.Context, client string, within time.Duration) error {
	deadline := time.Now().Add(within)
	var err error
	for time.Now().Before(deadline) {
		for _, p := range c.procs {
			select {
			case <-p.Done():
				return fmt.Errorf("%s exited: %s", p, harness.LastLines(p.Output(), 10))
			default:
			}
		}
		// The mount first: a write before it lands in the directory
		// underneath.
		if err = c.mounted(client); err == nil {
			if err = writeFile(filepath.Join(c.mountDir(client), ".bench-"+client), make([]byte, 16)); err == nil {
				return nil
			}
		}
		if !harness.Sleep(ctx, 500*time.Millisecond) {
			return ctx.Err()
		}
	}
	return fmt.Errorf("%s's mount takes no write after %s: %v", client, within, err)
}

// mounted checks that client's mount namespace has the volume's FUSE mount
// on the mount point.
func (c *cell) mounted(client string) error {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(c.mounts[client].PID), "mountinfo"))
	if err != nil {
		return err
	}
	point := filepath.Join(c.dir, "mnt")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		for i, x := range f {
			if x == "-" && len(f) > 4 && f[4] == point && i+1 < len(f) && f[i+1] == "fuse.glusterfs" {
				return nil
			}
		}
	}
	return fmt.Errorf("no GlusterFS mount on %s in %s's namespace", point, client)
}

// indexEntries counts the entries of every brick's heal index: the copies
// that wait for a heal. 0 on every brick is a healed volume.
func (c *cell) indexEntries() (int, error) {
	total := 0
	for _, s := range servers {
		n, err := volume.IndexEntries(c.brick(s))
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// waitHealed waits until no brick's index lists an entry, and says how
// long it took (or that it did not within max).
func (c *cell) waitHealed(ctx context.Context, from time.Time, max time.Duration) (time.Duration, error) {
	for {
		n, err := c.indexEntries()
		if err == nil && n == 0 {
			return time.Since(from), nil
		}
		if time.Since(from) > max {
			return 0, fmt.Errorf("%d entries still wait for a heal %s after the fault ended", n, max)
		}
		if !harness.Sleep(ctx, time.Second) {
			return 0, ctx.Err()
		}
	}
}

// killGluster kill -9s every GlusterFS process on server: glusterd, its
// brick and its self-heal daemon.
func (c *cell) killGluster(server string) ([]int, error) {
	pids, err := c.net.Host(server).PIDs()
	if err != nil {
		return nil, err
	}
	var killed []int
	for _, pid := range pids {
		comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		if err == nil && strings.HasPrefix(string(comm), "gluster") {
			if err := killPID(pid); err == nil {
				killed = append(killed, pid)
			}
		}
	}
	if len(killed) == 0 {
		return nil, errors.New("no GlusterFS process on " + server)
	}
	return killed, nil
}

// startGlusterd starts the peer's glusterd on server (again, after a
// crash, as its systemd unit would; glusterd then starts its brick).
func (c *cell) startGlusterd(ctx context.Context, server string) error {
	d := filepath.Join(c.dir, server, "glusterd")
	for _, sub := range []string{"state", "run", "log"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return err
		}
	}
	opt := func(k, v string) string { return "management." + k + "=" + v }
	p, err := c.net.Host(server).Start(ctx, "glusterd", "-N",
		"--xlator-option", opt("working-directory", filepath.Join(d, "state")),
		"--xlator-option", opt("run-directory", filepath.Join(d, "run")),
		"--xlator-option", opt("glusterd-sockfile", filepath.Join(d, "run", "glusterd.sock")),
		// Logs beside its state (GlusterFS's own multi-node tests'
		// option for it); everything else is GlusterFS's default.
		"--xlator-option", opt("cluster-test-mode", filepath.Join(d, "log")),
		"-l", filepath.Join(d, "log", "glusterd.log"))
	if err != nil {
		return err
	}
	c.procs[server] = p
	return nil
}
