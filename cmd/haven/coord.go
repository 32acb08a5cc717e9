package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/coord"
)

const coordUsage = `usage: haven coord ACTION [flags]

The coordination group (the embedded etcd members of haven.yaml's coordination
section), through the first node whose agent answers (docs/coordination.md):

actions:
  members          every member: its name, whether it leads, answers and has joined,
                   its database's size and what defragmenting would leave, its raft
                   term and index; and etcd's raised alarms
  snapshot FILE    save a snapshot of the key space (every record haven keeps in etcd)
                   to FILE, with its size and SHA-256
  restore FILE -n NODE [--global]
                   on NODE's machine, with its agent stopped: make NODE's etcd data
                   directory from FILE (haven coord snapshot's), its old one moved aside,
                   as a member of a new group of coordination.members with FILE's keys
                   (revisions bumped past any used before). Restore every member from
                   the same FILE, then start the agents
  defrag           defragment every member, one at a time, the leader last: the
                   database file shrinks to what is in use
  alarms disarm    clear etcd's alarms (after freeing the space a NOSPACE alarm was for)
  replace OLD --with NEW
                   remove member OLD (lost for good, or to retire) and add NEW, which
                   haven.yaml must name as a node and a member; then start NEW's agent
                   (its empty data dir joins the running group). Refused, with nothing
                   changed, when a step would leave no majority of the members answering
  add NEW          add NEW, as replace does without removing one
  remove OLD       remove OLD, as replace does without adding one (the group is smaller:
                   three members lose their quorum with one more loss, two with any)

flags:
`

func runCoord(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("coord", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, coordUsage); fs.PrintDefaults() }
	cfgPath := configFlag(fs)
	node := fs.String("n", "", "ask this node (default: the first that answers)")
	with := fs.String("with", "", "replace: the node that takes OLD's place")
	global := fs.Bool("global", false, "restore: the member of the global scope (coordination.global), not of the node's region")
	output := outputFlag(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return parseError(err)
	}
	if len(pos) == 0 {
		fs.Usage()
		return errUsage
	}
	if err := checkOutput(*output); err != nil {
		return err
	}
	ac, err := newAdminClient(*cfgPath)
	if err != nil {
		return err
	}
	if ac.cfg.Coordination == nil {
		return fmt.Errorf("%s has no coordination section: haven coord manages the embedded etcd members of coordination.members (docs/coordination.md)", *cfgPath)
	}
	nodes := ac.cfg.NodeNames()
	if *node != "" {
		nodes = []string{*node}
	}
	switch {
	case pos[0] == "members" && len(pos) == 1:
		var g agent.EtcdGroup
		if _, err := askAny(ac, nodes, "GET", "/api/v1/coordination/members", &g); err != nil {
			return err
		}
		if *output == "json" {
			return printJSON(stdout, g)
		}
		printGroup(stdout, g)
		if g.Leader == "" || len(g.Alarms) > 0 {
			return errors.New("the coordination group has no leader or raised alarms (above)")
		}
		return nil
	case pos[0] == "snapshot" && len(pos) == 2:
		return coordSnapshot(ac, nodes, pos[1], stdout)
	case pos[0] == "restore" && len(pos) == 2:
		if *node == "" {
			return errors.New("coord restore: -n NODE is required: the member to restore, on its machine, with its agent stopped")
		}
		return coordRestore(ac, *node, pos[1], *global, stdout)
	case pos[0] == "defrag" && len(pos) == 1:
		ac.client.Timeout = 10 * time.Minute
		var res []agent.DefragResult
		if _, err := askAny(ac, nodes, "POST", "/api/v1/coordination/defrag", &res); err != nil {
			return err
		}
		if *output == "json" {
			return printJSON(stdout, res)
		}
		var errs []error
		for _, r := range res {
			if r.Error != "" {
				fmt.Fprintf(stdout, "%s: %s\n", r.Name, r.Error)
				errs = append(errs, fmt.Errorf("%s: %s", r.Name, r.Error))
				continue
			}
			fmt.Fprintf(stdout, "%s: %s -> %s in %s\n", r.Name, size(r.Before), size(r.After), r.Took)
		}
		return errors.Join(errs...)
	case (pos[0] == "replace" && len(pos) == 2 && *with != "") || ((pos[0] == "add" || pos[0] == "remove") && len(pos) == 2):
		old, name := "", pos[1]
		switch pos[0] {
		case "replace":
			old, name = pos[1], *with
		case "remove":
			old, name = pos[1], ""
		}
		peer := ""
		if name != "" {
			if peer, err = peerURL(ac, name); err != nil {
				return err
			}
		}
		var out map[string]string
		via, err := askAny(ac, without(nodes, old), "POST", "/api/v1/coordination/replace?"+url.Values{"old": {old}, "new": {name}, "peer": {peer}}.Encode(), &out)
		if err != nil {
			return err
		}
		if name == "" {
			fmt.Fprintf(stdout, "removed %s through %s; take it out of coordination.members on every node\n", old, via)
			return nil
		}
		if old != "" {
			fmt.Fprintf(stdout, "removed %s; ", old)
		}
		fmt.Fprintf(stdout, "added %s (%s, id %s) through %s: now start its agent (systemctl start haven@%s); its empty data dir joins the group\n", name, peer, out["id"], via, name)
		return nil
	case pos[0] == "alarms" && len(pos) == 2 && pos[1] == "disarm":
		var out struct{ Cleared []string }
		if _, err := askAny(ac, nodes, "POST", "/api/v1/coordination/alarms/disarm", &out); err != nil {
			return err
		}
		if len(out.Cleared) == 0 {
			fmt.Fprintln(stdout, "no alarm was raised")
		}
		for _, c := range out.Cleared {
			fmt.Fprintf(stdout, "cleared %s\n", c)
		}
		return nil
	}
	fs.Usage()
	return errUsage
}

func printGroup(w io.Writer, g agent.EtcdGroup) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tID\tLEADER\tHEALTH\tDB SIZE\tIN USE\tRAFT TERM\tRAFT INDEX\tPEER URL")
	for _, m := range g.Members {
		health := "ok"
		switch {
		case !m.Started:
			health = "not joined"
		case m.Error != "":
			health = m.Error
		}
		leader := ""
		if m.Leader {
			leader = "leader"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", m.Name, m.ID, orDash(leader), health, size(m.DBSize), size(m.DBInUse), m.RaftTerm, m.RaftIndex, strings.Join(m.PeerURLs, ","))
	}
	tw.Flush()
	if g.Leader == "" {
		fmt.Fprintln(w, "no member reports a leader: the group has lost its quorum")
	}
	for _, a := range g.Alarms {
		fmt.Fprintf(w, "alarm raised: %s (free the space, then haven coord alarms disarm)\n", a)
	}
}

// coordSnapshot saves the snapshot the first answering node streams to
// path: written beside it and renamed once whole and synced, so that a
// broken stream never leaves a file that looks like a snapshot.
func coordSnapshot(ac *adminClient, nodes []string, path string, stdout io.Writer) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".haven-snapshot-*")
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	var errs []error
	for _, n := range nodes {
		base, err := ac.adminURL(n)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/coordination/snapshot", nil)
		if ac.token != "" {
			req.Header.Set("Authorization", "Bearer "+ac.token)
		}
		req.Header.Set("X-Haven-Operator", operator())
		client := *ac.client
		client.Timeout = 0 // the context bounds it
		resp, err := client.Do(req)
		if err != nil {
			cancel()
			errs = append(errs, fmt.Errorf("node %s: %w", n, err))
			continue
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			cancel()
			errs = append(errs, fmt.Errorf("node %s: %s: %s", n, resp.Status, strings.TrimSpace(string(b))))
			if resp.StatusCode == http.StatusServiceUnavailable {
				continue
			}
			break
		}
		h := sha256.New()
		written, err := io.Copy(io.MultiWriter(tmp, h), resp.Body)
		resp.Body.Close()
		cancel()
		if err != nil {
			return fmt.Errorf("snapshot from %s: the stream broke after %d bytes: %w", n, written, err)
		}
		if written == 0 {
			return fmt.Errorf("snapshot from %s: empty; see its agent's log (journalctl -u haven@%s), or ask another node with -n", n, n)
		}
		if err := tmp.Sync(); err != nil {
			return err
		}
		if err := tmp.Close(); err != nil {
			return err
		}
		if err := os.Rename(tmp.Name(), path); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "saved %s: %s from %s, sha256 %s\n", path, size(written), n, hex.EncodeToString(h.Sum(nil)))
		return nil
	}
	return errors.Join(errs...)
}

// peerURL is node's etcd peer URL as the file gives it: its address and
// its scope's peer port, https with the scope's TLS.
func peerURL(ac *adminClient, node string) (string, error) {
	n, ok := ac.cfg.Node(node)
	if !ok {
		return "", fmt.Errorf("%s is not a node of haven.yaml: add it (regions, and coordination.members) first", node)
	}
	scope := ac.cfg.CoordinationOf(node)
	if scope == nil || !slices.Contains(scope.Members, node) {
		key := "coordination.members"
		if n.Region != "" && ac.cfg.Coordination.Regions[n.Region] != nil {
			key = "coordination.regions." + n.Region + ".members"
		}
		return "", fmt.Errorf("%s is not in %s: add it there first, so that its agent runs a member", node, key)
	}
	scheme := "http"
	if scope.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(n.Address, strconv.Itoa(scope.PeerPort)), nil
}

func without(nodes []string, drop string) []string {
	var out []string
	for _, n := range nodes {
		if n != drop {
			out = append(out, n)
		}
	}
	return out
}

// coordRestore makes node's etcd data directory from the snapshot at path,
// moving an existing one aside; node's agent must not run.
func coordRestore(ac *adminClient, node, path string, global bool, stdout io.Writer) error {
	mc, ok := agent.CoordinationMember(ac.cfg, node, global)
	if !ok {
		return fmt.Errorf("coord restore: %s is not a member of its coordination scope (coordination.members%s)", node, map[bool]string{true: " of the global scope"}[global])
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("coord restore: %w", err)
	}
	if u, err := url.Parse(mc.ClientURL); err == nil {
		if c, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
			c.Close()
			return fmt.Errorf("coord restore: %s's etcd member answers at %s: stop its agent first (systemctl stop haven@%s); nothing was changed", node, u.Host, node)
		}
	}
	if entries, err := os.ReadDir(mc.DataDir); err == nil && len(entries) > 0 {
		aside := mc.DataDir + ".before-restore-" + time.Now().UTC().Format("20060102T150405Z")
		if err := os.Rename(mc.DataDir, aside); err != nil {
			return fmt.Errorf("coord restore: move the old data aside: %w", err)
		}
		fmt.Fprintf(stdout, "moved %s's old data to %s\n", node, aside)
	}
	info, err := coord.RestoreMember(mc, path)
	if err != nil {
		return err
	}
	members := slices.Sorted(maps.Keys(mc.InitialCluster))
	fmt.Fprintf(stdout, "restored %s (revision %d, %d keys, %s) into %s as member %s of %s, revisions bumped by %d\n",
		path, info.Revision, info.Keys, size(info.Size), mc.DataDir, node, strings.Join(members, ", "), coord.RestoreRevisionBump)
	if others := without(members, node); len(others) > 0 {
		fmt.Fprintf(stdout, "restore %s from the same file on their machines (haven coord restore FILE -n NODE) before starting any agent: a restored member waits for a quorum of them\n", strings.Join(others, ", "))
	}
	fmt.Fprintf(stdout, "then start the agent: systemctl start haven@%s\n", node)
	return nil
}
