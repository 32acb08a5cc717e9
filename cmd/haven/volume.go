package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/volume"
)

const volumeUsage = `usage: haven volume ACTION [NAME] [flags]

The replicated file volumes (volumes: in haven.yaml; docs/volume.md):

actions:
  status [NAME]            each volume as its servers see it: bricks online, the self-heal daemons,
                           pending heals and split-brain entries per brick, client and server
                           quorum, the pool's peers; and each application node's mount
  heal NAME [--full]       start a heal now from the first server that answers (the self-heal
                           daemons heal by themselves; --full walks every file, after a brick was
                           replaced or wiped)
  restore NAME --to DIR    write the volume's copy (volumes.NAME.copy) into DIR, on this machine:
                           every file of the last complete pass, checked against its digest (the
                           other region's volume, mounted at DIR, after a disaster)

flags:
`

func runVolume(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("volume", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, volumeUsage); fs.PrintDefaults() }
	cfgPath := configFlag(fs)
	within := nodeTimeoutFlag(fs)
	output := outputFlag(fs)
	full := fs.Bool("full", false, "heal: every file, not only the entries the bricks list as pending")
	to := fs.String("to", "", "restore: the directory to write the files into")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return parseError(err)
	}
	if len(pos) == 0 || len(pos) > 2 {
		fs.Usage()
		return errUsage
	}
	if pos[0] == "restore" {
		if len(pos) != 2 || *to == "" {
			return errors.New("volume restore: name the volume and the directory: haven volume restore NAME --to DIR")
		}
		return restoreVolume(stdout, *cfgPath, pos[1], *to)
	}
	ac, err := newAdminClient(*cfgPath)
	if err != nil {
		return err
	}
	vols := ac.cfg.Volumes
	if len(vols) == 0 {
		return fmt.Errorf("%s has no volumes section", *cfgPath)
	}
	names := slices.Sorted(maps.Keys(vols))
	if len(pos) == 2 {
		if _, ok := vols[pos[1]]; !ok {
			return fmt.Errorf("%q is not a volume of %s (volumes: %s)", pos[1], *cfgPath, strings.Join(names, ", "))
		}
		names = []string{pos[1]}
	}
	switch pos[0] {
	case "status":
		if err := checkOutput(*output); err != nil {
			return err
		}
		nodes := volumeNodes(ac.cfg, names)
		if *output == "json" {
			return printJSONAnswers(stdout, ac, nodes, "/api/v1/volumes", *within, nil, false)
		}
		as := askEach[[]agent.VolumeStatus](ac, nodes, "/api/v1/volumes", *within)
		return printVolumes(stdout, ac.cfg, names, as)
	case "heal":
		if len(pos) != 2 {
			return errors.New("volume heal: name the volume: haven volume heal NAME")
		}
		var errs []error
		for _, n := range vols[pos[1]].Servers {
			var out map[string]any
			err := ac.do("POST", n, "/api/v1/volumes/"+pos[1]+"/heal?full="+fmt.Sprint(*full), &out)
			if err == nil {
				fmt.Fprintf(stdout, "%s: heal of volume %s started (full: %v); haven volume status %s shows what is pending\n", n, pos[1], *full, pos[1])
				return nil
			}
			errs = append(errs, err)
			if !errors.Is(err, errUnreachable) {
				break // the server answered: its refusal stands
			}
		}
		return fmt.Errorf("volume heal %s: %w", pos[1], errors.Join(errs...))
	}
	fs.Usage()
	return errUsage
}

// restoreVolume writes volume name's copy into dir.
func restoreVolume(w io.Writer, cfgPath, name, dir string) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	v, ok := cfg.Volumes[name]
	switch {
	case !ok:
		return fmt.Errorf("%q is not a volume of %s (its volumes: %s)", name, cfgPath, strings.Join(slices.Sorted(maps.Keys(cfg.Volumes)), ", "))
	case v.Copy == nil:
		return fmt.Errorf("volume %s has no copy (volumes.%s.copy): there is nothing to restore from", name, name)
	}
	store, err := repo.Open(v.Copy.Repository)
	if err != nil {
		return err
	}
	if !filepath.IsAbs(dir) {
		if dir, err = filepath.Abs(dir); err != nil {
			return err
		}
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	st, err := volume.Restore(ctx, store, volume.CopyPrefix(cfg.Cluster, name), dir)
	if err != nil {
		return fmt.Errorf("volume restore %s: %w (%d files restored into %s)", name, err, st.Files, dir)
	}
	fmt.Fprintf(w, "restored %d files (%d bytes) of volume %s into %s: the volume as of %s (%s ago)\n",
		st.Files, st.Bytes, name, dir, st.Started.UTC().Format(time.RFC3339), time.Since(st.Started).Round(time.Second))
	return nil
}

// volumeNodes are the servers and mount nodes of the named volumes.
func volumeNodes(cfg *config.Config, names []string) []string {
	var nodes []string
	for _, name := range names {
		v := cfg.Volumes[name]
		nodes = append(nodes, v.Servers...)
		if v.Mount != nil {
			nodes = append(nodes, v.Mount.Nodes...)
		}
	}
	slices.Sort(nodes)
	return slices.Compact(nodes)
}

// printVolumes prints each volume as the server with the newest status
// sees it, every server's brick and self-heal daemon, and every mount.
func printVolumes(w io.Writer, cfg *config.Config, names []string, as []answer[[]agent.VolumeStatus]) error {
	var errs []error
	for _, a := range as {
		if a.err != nil {
			errs = append(errs, a.err)
		}
	}
	for i, name := range names {
		if i > 0 {
			fmt.Fprintln(w)
		}
		var view *volume.Status
		from := ""
		mounts := map[string]*volume.MountStatus{}
		var cp *volume.CopyStatus
		copier := ""
		for _, a := range as {
			for _, v := range a.val {
				if v.Name != name {
					continue
				}
				// The reporter's status has every brick and the heals;
				// one that read everything beats one with an error.
				if v.Storage != nil && (view == nil || better(v.Storage, view)) {
					view, from = v.Storage, a.node
				}
				if v.Mount != nil {
					mounts[a.node] = v.Mount
				}
				if v.Copy != nil && (cp == nil || v.Copy.Copying) {
					cp, copier = v.Copy, a.node
				}
			}
		}
		if view != nil {
			mergeOwnIndexes(view, name, as)
		}
		printVolume(w, cfg.Volumes[name], view, from, mounts)
		printCopy(w, cfg.Volumes[name], cp, copier)
	}
	return errors.Join(errs...)
}

// better reports whether status a is the one to show rather than b: read
// without an error, then the reporter's, then the newer.
func better(a, b *volume.Status) bool {
	switch {
	case (a.Err == "") != (b.Err == ""):
		return a.Err == ""
	case a.Reporter != b.Reporter:
		return a.Reporter
	}
	return a.At.After(b.At)
}

// mergeOwnIndexes raises each brick's pending count in view to what the
// brick's own server counted in its index, when that is more.
func mergeOwnIndexes(view *volume.Status, name string, as []answer[[]agent.VolumeStatus]) {
	for _, a := range as {
		for _, v := range a.val {
			if v.Name != name || v.Storage == nil {
				continue
			}
			for _, own := range v.Storage.Bricks {
				if own.Node != a.node || !own.HealKnown {
					continue
				}
				for i := range view.Bricks {
					b := &view.Bricks[i]
					if b.Spec() == own.Spec() {
						b.HealKnown, b.Pending = true, max(b.Pending, own.Pending)
						view.HealPending = max(view.HealPending, b.Pending)
					}
				}
			}
		}
	}
}

func printVolume(w io.Writer, v *config.Volume, st *volume.Status, from string, mounts map[string]*volume.MountStatus) {
	if st == nil {
		fmt.Fprintf(w, "volume %s: no server answered with its state\n", v.Name)
	} else {
		fmt.Fprintf(w, "volume %s: %s; client quorum %s, server quorum %s; heal pending %d, split-brain %d (as %s saw it %s ago)\n",
			v.Name, st.State, yesNo(st.ClientQuorum), yesNo(st.ServerQuorum), st.HealPending, st.SplitBrain, from, time.Since(st.At).Round(time.Second))
		if st.Err != "" {
			fmt.Fprintf(w, "  could not read everything: %s\n", st.Err)
		}
		if st.Problem != "" {
			fmt.Fprintf(w, "  not as configured: %s\n", st.Problem)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  BRICK\tNODE\tONLINE\tPID\tSELF-HEAL\tPENDING\tSPLIT-BRAIN")
		for _, b := range st.Bricks {
			pending, split := "?", "?"
			if b.HealKnown {
				pending, split = fmt.Sprint(b.Pending), fmt.Sprint(b.SplitBrain)
			}
			role := b.Node
			if b.Arbiter {
				role += " (arbiter)"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\t%s\n", b.Spec(), role, yesNo(b.Online), b.PID, onOff(b.SelfHeal), pending, split)
		}
		tw.Flush()
		var peers []string
		for _, p := range st.Peers {
			state := "connected"
			if !p.Connected {
				state = "disconnected"
			}
			peers = append(peers, p.Hostname+" "+state)
		}
		fmt.Fprintf(w, "  pool (from %s): %s\n", from, orDash(strings.Join(peers, ", ")))
	}
	if v.Mount == nil {
		return
	}
	for _, n := range v.Mount.Nodes {
		m, ok := mounts[n]
		switch {
		case !ok:
			fmt.Fprintf(w, "  mount %s %s: no answer\n", n, v.Mount.Path)
		case m.Healthy:
			fmt.Fprintf(w, "  mount %s %s: healthy (client pid %d, remounts %d)\n", n, m.Path, m.PID, m.Restarts)
		default:
			fmt.Fprintf(w, "  mount %s %s: NOT USABLE: %s (remounts %d)\n", n, m.Path, m.Why, m.Restarts)
		}
	}
}

// printCopy prints the copy as the node that makes it reports it.
func printCopy(w io.Writer, v *config.Volume, c *volume.CopyStatus, node string) {
	switch {
	case v.Copy == nil:
		return
	case c == nil:
		fmt.Fprintf(w, "  copy: no mount node answered\n")
	case !c.Copying:
		fmt.Fprintf(w, "  copy to %s: no node copies now (none holds the lock)\n", c.Target)
	case c.LastPass.IsZero():
		fmt.Fprintf(w, "  copy to %s by %s: no complete pass yet %s\n", c.Target, node, orDash(c.Err))
	default:
		fmt.Fprintf(w, "  copy to %s by %s: %d files as of %s ago (the files' recovery point), last pass took %s",
			c.Target, node, c.Files, c.Lag.Round(time.Second), c.PassDuration.Round(time.Millisecond))
		if c.Err != "" {
			fmt.Fprintf(w, "; last pass FAILED: %s", c.Err)
		}
		fmt.Fprintln(w)
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
