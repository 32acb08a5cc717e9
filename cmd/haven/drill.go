package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/backup/check"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill"
	"github.com/haven-ha/haven/internal/drill/fault"
	"github.com/haven-ha/haven/internal/drill/report"
	"github.com/haven-ha/haven/internal/pg/keeper"
)

// drillRun is haven drill run: it plays scenario and prints the verdict,
// and writes the HTML report to htmlPath when given; an objective not kept
// is an error (exit 1), once the report is written.
func drillRun(ac *adminClient, scenario string, opt drill.Options, lock bool, scratch, output, htmlPath string, stdout, stderr io.Writer) error {
	s, err := drill.ScenarioNamed(scenario)
	if err != nil {
		return err
	}
	if opt.DSN, opt.URL, err = drillWorkload(ac.cfg, opt.DSN, opt.URL); err != nil {
		return err
	}
	if output != "text" && output != "json" {
		return fmt.Errorf("-o %q: give text or json", output)
	}
	if htmlPath != "" && !isDir(filepath.Dir(htmlPath)) {
		// Said before the drill, not after minutes of it.
		return fmt.Errorf("--html %s: no directory %s to write the report in", htmlPath, filepath.Dir(htmlPath))
	}
	if lock {
		release, err := lockDrill(ac, s.Name, cmp.Or(opt.FaultFor, 10*time.Second), stderr)
		if err != nil {
			return err
		}
		defer release()
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	logf := func(msg string) { fmt.Fprintln(stderr, msg) }
	var r drill.Result
	if s.Name == "restore" {
		r, err = drill.RunRestore(ctx, ac.cfg, opt, restorer(ac.cfg, scratch, stderr), logf)
	} else {
		r, err = drill.Run(ctx, ac.cfg, drillAgents{ac}, s, opt, logf)
	}
	if err != nil {
		return err
	}
	if err := printResult(stdout, output, r, r.Summary()); err != nil {
		return err
	}
	if htmlPath != "" {
		if err := writeReport(htmlPath, r); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "the report is in %s\n", htmlPath)
	}
	if !r.Met {
		return fmt.Errorf("drill %s: objectives not kept", s.Name)
	}
	return nil
}

// writeReport writes r's HTML report to path.
func writeReport(path string, r drill.Result) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--html: %w", err)
	}
	if err := report.HTML(f, r); err != nil {
		f.Close()
		return fmt.Errorf("--html %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--html %s: %w", path, err)
	}
	return nil
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// restorer restores the newest backup of the first repository and the
// archive into a scratch directory, as haven backup check does.
func restorer(cfg *config.Config, scratch string, stderr io.Writer) drill.Restorer {
	return func(ctx context.Context, query string) (string, time.Duration, error) {
		if cfg.Database == nil || cfg.Database.Backup == nil {
			return "", 0, errors.New("haven.yaml has no database.backup: there is nothing to restore from")
		}
		rp, err := openRepository(cfg, "")
		if err != nil {
			return "", 0, err
		}
		res, err := check.Run(ctx, check.Config{Repo: rp, Cluster: cfg.Cluster, ScratchDir: scratch, Query: query,
			BinDir: cfg.Database.Bindir, User: runAsUser(cfg), Settings: cfg.Database.Settings,
			Workers: cfg.Database.Backup.Parallel, Logger: newLogger(stderr, "warn", false)})
		if err != nil {
			return "", 0, err
		}
		return res.Answer, res.Duration, nil
	}
}

// drillSoak is haven drill soak: random faults for --for, then the
// verdict; an objective not kept is an error (exit 1).
func drillSoak(ac *adminClient, opt drill.SoakOptions, lock bool, output, htmlPath string, stdout, stderr io.Writer) error {
	var err error
	if opt.DSN, opt.URL, err = drillWorkload(ac.cfg, opt.DSN, opt.URL); err != nil {
		return err
	}
	if output != "text" && output != "json" {
		return fmt.Errorf("-o %q: give text or json", output)
	}
	if htmlPath != "" && !isDir(filepath.Dir(htmlPath)) {
		return fmt.Errorf("--html %s: no directory %s to write the report in", htmlPath, filepath.Dir(htmlPath))
	}
	if lock {
		// Its faults last --for (an hour when only --faults bounds it),
		// and the last heal and the writes' check some minutes more.
		release, err := lockDrill(ac, "soak", cmp.Or(opt.For, time.Hour)+5*time.Minute, stderr)
		if err != nil {
			return err
		}
		defer release()
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	r, err := drill.Soak(ctx, ac.cfg, drillAgents{ac}, opt, func(msg string) { fmt.Fprintln(stderr, msg) })
	if err != nil {
		return err
	}
	if err := printResult(stdout, output, r, r.Summary()); err != nil {
		return err
	}
	if htmlPath != "" {
		if err := writeReport(htmlPath, r.Result()); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "the report is in %s\n", htmlPath)
	}
	if !r.Met {
		return errors.New("drill soak: objectives not kept")
	}
	return nil
}

// drillWorkload fills the workload a drill is not given from haven.yaml's
// drills section.
func drillWorkload(cfg *config.Config, dsn, url string) (string, string, error) {
	if d := cfg.Drills; d != nil {
		if url == "" {
			url = d.URL
		}
		if dsn == "" && d.DSNFile != "" {
			b, err := os.ReadFile(d.DSNFile)
			if err != nil {
				return "", "", fmt.Errorf("drills.dsn_file: %w", err)
			}
			dsn = strings.TrimSpace(string(b))
		}
	}
	if dsn == "" && url == "" {
		return "", "", errors.New("give a workload: the database as the application reaches it (--dsn postgres://USER:PASSWORD@ROUTER:PORT/DB), the service's URL (--url), or both (or drills.dsn_file and drills.url in haven.yaml)")
	}
	return dsn, url, nil
}

// printResult prints a drill's result as -o asks: its JSON, or summary.
func printResult(stdout io.Writer, output string, r any, summary string) error {
	if output == "json" {
		return printJSON(stdout, r)
	}
	_, err := fmt.Fprint(stdout, summary)
	return err
}

// drillAgents reaches the agents for drill.Run through their admin API.
type drillAgents struct{ ac *adminClient }

// drillAsk bounds each question a drill asks of the agents.
const drillAsk = 2 * time.Second

// State asks the database's nodes for the active region and its primary,
// and the balancers' nodes for their floating addresses' holders.
func (d drillAgents) State(ctx context.Context) (drill.State, error) {
	cfg := d.ac.cfg
	st := drill.State{Holders: map[string]string{}}
	var errs []error
	if db := cfg.Database; db != nil {
		nodes := db.Nodes
		if db.DR != nil {
			as := askEach[keeper.RegionStatus](d.ac, append(slices.Clone(db.Nodes), db.DR.Nodes...), "/api/v1/dr", drillAsk)
			var epoch int64 = -1
			for _, a := range as {
				if a.err == nil && a.val.Record.Epoch > epoch {
					epoch, st.Region = a.val.Record.Epoch, a.val.Record.Holder
				}
			}
			if n, ok := cfg.Node(db.DR.Nodes[0]); ok && n.Region == st.Region {
				nodes = db.DR.Nodes
			}
		}
		best, _, _, err := newestDatabase(nodes, askEach[*agent.DatabaseStatus](d.ac, nodes, "/api/v1/database", drillAsk))
		if err != nil {
			errs = append(errs, err)
		} else {
			st.Primary = best.Primary
			for _, n := range slices.Sorted(maps.Keys(best.Members)) {
				if m := best.Members[n]; m.Role == keeper.RoleReplica && m.Streaming {
					st.Replicas = append(st.Replicas, n)
				}
			}
		}
	}
	epochs := map[string]int64{}
	for _, name := range slices.Sorted(maps.Keys(cfg.Balancers)) {
		b := cfg.Balancers[name]
		if b.VIP == nil {
			continue
		}
		for _, a := range askEach[[]agent.VIPStatus](d.ac, b.Nodes, "/api/v1/vips", drillAsk) {
			for _, v := range a.val {
				if v.Name == name && v.Holder != "" && v.HeldEpoch >= epochs[name] {
					epochs[name], st.Holders[name] = v.HeldEpoch, v.Holder
				}
			}
		}
	}
	if st.Primary == "" && len(st.Holders) == 0 && len(errs) > 0 {
		return st, errors.Join(errs...)
	}
	return st, nil
}

func (d drillAgents) Inject(ctx context.Context, node string, spec fault.Spec) (fault.Fault, error) {
	body, _ := json.Marshal(spec)
	var f fault.Fault
	err := d.ac.send(ctx, "POST", node, "/api/v1/drill/faults", body, &f)
	if refused, ok := errors.AsType[*refusedError](err); ok && refused.status == http.StatusConflict && spec.Kind == fault.Fill {
		err = fmt.Errorf("%w: %w", err, fault.ErrAlreadyFull)
	}
	return f, err
}

const drillUsage = `usage: haven drill ACTION [flags]

Faults each agent injects on its own node for drills, when haven.yaml sets
drills.enabled (docs/drills.md). Every fault ends by itself after --for.

actions:
  fault -n NODE --kind KIND --for DURATION [--target TARGET] [--peers P1,P2] [--level PERCENT]
         kill     SIGKILL to the target's process: --target postgres (the default), agent
                  (the agent itself, which its supervisor must start again) or process:NAME
                  (a process of drills.processes, by its pid file or systemd unit)
         pause    SIGSTOP to the target's process and every process under it, SIGCONT at
                  the end (the agent's own pause is held by a helper process; with
                  --target agent --peers, the node lost: the helper drops its traffic with
                  the peers from the moment it stops the agent until it wakes it)
         stop     systemctl stop the unit of --target process:NAME, start at the end
         drop     drop every packet between NODE and the --peers: nodes, or backends by
                  their address (HOST:PORT or HOST)
         loss     drop --level percent of the packets between NODE and the --peers
         fill     fill the file system of the role's data directory to --level percent
  faults [-n NODE]   the active faults of every node (or one)
  stop -n NODE ID    end a fault now
  run SCENARIO [--dsn DSN] [--url URL] [--for D] [-o json] [--html FILE] [--no-lock]
         play a drill against the deployment: a writer commits through --dsn (a router's
         primary port, as the application does) and a client asks for --url (the service
         as users reach it), the scenario's faults are injected, and the observed RTO and
         RPO are judged against haven.yaml's objectives; exit 1 when one is not kept.
         --html also writes the report, a page to open from the file (timeline, verdicts).
         It first takes the cluster's drill lock (refused while another drill, scheduled
         or not, holds it; --no-lock runs beside it) and gives it back at the end.
         Scenarios: primary-pause, primary-kill, primary-partition, node-loss,
         balancer-loss, backend-loss, region-loss, restore (the newest backup and the
         archive restored into --scratch while the writes go on: the region's loss
         recovered from the backups alone), or a scenario file's path
  soak [--dsn DSN] [--url URL] --for D [--faults N] [--kinds K1,K2] [--seed S] [-o json] [--html FILE] [--no-lock]
         random faults of every class (--kinds; default kill, pause, drop, loss of postgres
         and the database's nodes, pause-agent) for --for, each after the database is whole
         again; every outage and the writes lost are judged against the objectives

flags:
`

func runDrill(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "hold" {
		// Hidden: the helper an agent starts to hold its own pause.
		return fault.HoldMain(args[1:])
	}
	fs := newFlagSet("drill", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, drillUsage); fs.PrintDefaults() }
	cfgPath := configFlag(fs)
	node := fs.String("n", "", "the node (fault, stop: required)")
	kind := fs.String("kind", "", "fault: kill, pause, stop, drop, loss or fill")
	target := fs.String("target", "postgres", "fault: what it hits: postgres, agent or process:NAME")
	peers := fs.String("peers", "", "fault: drop, loss, pause of the agent (a node lost): the nodes or backends' addresses to cut NODE off from, comma-separated")
	level := fs.Int("level", 0, "fault: fill: how full to leave the file system; loss: how many packets to drop (percent)")
	dur := fs.Duration("for", 0, "fault, run: how long the fault lasts (run: default 10s)")
	dsn := fs.String("dsn", "", "run: the application's way to the database, such as postgres://app:PASSWORD@ROUTER:6432/app (default: drills.dsn_file)")
	url := fs.String("url", "", "run: the service as users reach it, such as http://www.example.com/ (default: drills.url)")
	output := fs.String("o", "text", "run, soak: text or json")
	htmlPath := fs.String("html", "", "run, soak: also write the report to `FILE`, a self-contained HTML page")
	scratch := fs.String("scratch", "/var/tmp", "run restore: the directory to restore into (a directory of its own in it, removed after)")
	count := fs.Int("faults", 0, "soak: stop after this many faults (default: when --for is over)")
	kinds := fs.String("kinds", "", "soak: the classes of fault, comma-separated (default kill,pause,drop,loss,pause-agent)")
	seed := fs.Uint64("seed", 0, "soak: the random draw's seed, to repeat a soak (default: from the clock)")
	noLock := fs.Bool("no-lock", false, "run, soak: do not take the cluster's drill lock (one drill at a time, the scheduled ones included); the scheduler's own drills run so, under its lock")
	within := nodeTimeoutFlag(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return parseError(err)
	}
	if len(pos) == 0 {
		fs.Usage()
		return errUsage
	}
	ac, err := newAdminClient(*cfgPath)
	if err != nil {
		return err
	}
	switch {
	case pos[0] == "fault" && len(pos) == 1:
		if *node == "" {
			return fmt.Errorf("give the node to inject the fault on: -n NODE")
		}
		spec := fault.Spec{Kind: fault.Kind(*kind), Level: *level, Duration: *dur}
		if spec.Kind != fault.Drop && spec.Kind != fault.Loss {
			spec.Target = *target
		}
		if *peers != "" || spec.Kind == fault.Drop || spec.Kind == fault.Loss {
			spec.Peers = strings.Split(*peers, ",")
		}
		body, _ := json.Marshal(spec)
		var f fault.Fault
		if err := ac.send(context.Background(), "POST", *node, "/api/v1/drill/faults", body, &f); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "fault %s on %s until %s: %s\n", f.ID, *node, f.Until.Format(time.TimeOnly), f.Detail)
		return nil
	case pos[0] == "faults" && len(pos) == 1:
		nodes := ac.cfg.NodeNames()
		if *node != "" {
			nodes = []string{*node}
		}
		as := askEach[[]fault.Fault](ac, nodes, "/api/v1/drill/faults", *within)
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tID\tKIND\tUNTIL\tWHAT")
		for _, a := range as {
			for _, f := range a.val {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.node, f.ID, f.Spec.Kind, f.Until.Format(time.TimeOnly), f.Detail)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, a := range as {
			if a.err != nil {
				fmt.Fprintf(stdout, "%s: %s\n", a.node, noAnswer(a.err))
			}
		}
		return nil
	case pos[0] == "run" && len(pos) == 2:
		return drillRun(ac, pos[1], drill.Options{DSN: *dsn, URL: *url, FaultFor: *dur}, !*noLock, *scratch, *output, *htmlPath, stdout, stderr)
	case pos[0] == "soak" && len(pos) == 1:
		opt := drill.SoakOptions{DSN: *dsn, URL: *url, For: *dur, Faults: *count, Seed: *seed}
		for _, k := range strings.FieldsFunc(*kinds, func(r rune) bool { return r == ',' }) {
			opt.Kinds = append(opt.Kinds, fault.Kind(strings.TrimSpace(k)))
		}
		return drillSoak(ac, opt, !*noLock, *output, *htmlPath, stdout, stderr)
	case pos[0] == "stop" && len(pos) == 2:
		if *node == "" {
			return fmt.Errorf("give the node the fault runs on: -n NODE")
		}
		if err := ac.do("POST", *node, "/api/v1/drill/faults/"+pos[1]+"/stop", nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "fault %s on %s undone\n", pos[1], *node)
		return nil
	}
	fs.Usage()
	return errUsage
}
