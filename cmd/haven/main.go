// Command haven makes a self-hosted web service highly available: see
// `haven help` and docs/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/demo"
	"github.com/haven-ha/haven/internal/demoapp"
)

// version is set at build time with -ldflags "-X main.version=..."; without
// it the module version or VCS revision is used.
var version = ""

const usage = `haven — high availability and disaster recovery for a self-hosted web service

usage:
  haven agent  -c haven.yaml -n NODE     run the roles haven.yaml assigns to NODE
  haven check  -c haven.yaml             validate the file; exit 1 listing every problem
  haven lb     ACTION [BACKEND] ...      drain | enable | maint | weight | status (see haven lb -h)
  haven vip    move --to NODE | status   hand a floating address over; show its holder (see haven vip -h)
  haven pg     switchover [--to NODE] | status   hand the database primary over; show the members (see haven pg -h)
  haven dns    serve | drain|enable NAME TARGET | status   one name server alone; a DNS target out of the answers; the answers (see haven dns -h)
  haven certs  -c haven.yaml -o DIR      make a private CA and node certificates for etcd TLS
  haven status -c haven.yaml [-n NODE]   show what each node's agent reports
  haven demo   [--duration D]            run the demo: a balancer on loopback; as root, a floating address, the database, DNS
  haven backend --listen ADDR --name N   run the demo web application (used by tests and benchmarks)
  haven version                          print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "agent":
		err = runAgent(rest, stderr)
	case "check":
		return runCheck(rest, stdout, stderr)
	case "lb":
		err = runLB(rest, stdout, stderr)
	case "status":
		err = runStatus(rest, stdout, stderr)
	case "vip":
		err = runVIP(rest, stdout, stderr)
	case "pg":
		err = runPG(rest, stdout, stderr)
	case "dns":
		err = runDNS(rest, stdout, stderr)
	case "certs":
		err = runCerts(rest, stdout, stderr)
	case "demo":
		err = runDemo(rest, stdout, stderr)
	case "backend":
		err = runBackend(rest, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "haven", buildVersion())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "haven: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		if errors.Is(err, errUsage) {
			return 2
		}
		fmt.Fprintln(stderr, "haven:", err)
		return 1
	}
	return 0
}

var errUsage = errors.New("usage")

func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "devel-" + rev
}

func newLogger(w io.Writer, level string, json bool) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	if json {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func runAgent(args []string, stderr io.Writer) error {
	fs := newFlagSet("agent", stderr)
	cfgPath := fs.String("c", "haven.yaml", "configuration file")
	node := fs.String("n", "", "this node's name in the configuration (required)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	jsonLogs := fs.Bool("log-json", false, "log in JSON")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *node == "" {
		return fmt.Errorf("agent: -n NODE is required (the node's name in %s)", *cfgPath)
	}
	// Catch SIGHUP before anything else: its default action ends the
	// process, and a reload sent right after start must not kill the agent.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	log := newLogger(stderr, *level, *jsonLogs)
	a, err := agent.New(agent.Options{ConfigPath: *cfgPath, Node: *node, Logger: log, Version: buildVersion()})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go onSignal(ctx, hup, func() {
		log.Info("SIGHUP: reloading configuration")
		a.Reload() // logs its own outcome; a bad file keeps the running config
	})
	log.Info("haven agent starting", "version", buildVersion(), "config", *cfgPath, "node", *node, "pid", os.Getpid())
	return a.Run(ctx)
}

// onSignal calls fn for every signal on sig until ctx ends.
func onSignal(ctx context.Context, sig <-chan os.Signal, fn func()) {
	for {
		select {
		case <-sig:
			fn()
		case <-ctx.Done():
			return
		}
	}
}

func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", stderr)
	cfgPath := fs.String("c", "haven.yaml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if cfg != nil {
		for _, w := range cfg.Warnings {
			fmt.Fprintln(stderr, "warning:", w)
		}
	}
	if err != nil {
		var probs config.Problems
		if errors.As(err, &probs) {
			for _, p := range probs {
				fmt.Fprintln(stderr, p.Error())
			}
			fmt.Fprintf(stderr, "%s: %d problem(s)\n", *cfgPath, len(probs))
		} else {
			fmt.Fprintln(stderr, "haven:", err)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok (%s, %s, %s)\n", *cfgPath, count(len(cfg.NodeNames()), "node"), count(len(cfg.Balancers), "balancer"), count(len(cfg.Checks), "check"))
	return 0
}

func runBackend(args []string, stderr io.Writer) error {
	fs := newFlagSet("backend", stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "address to listen on")
	name := fs.String("name", "", "the backend's name (default: the listen address)")
	database := fs.String("database", "", "PostgreSQL connection string: POST /orders?id=N stores order N there")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *name == "" {
		*name = *listen
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := newLogger(stderr, "info", false)
	log.Info("demo backend listening", "addr", ln.Addr().String(), "name", *name)
	app := demoapp.New(*name)
	if *database != "" {
		if err := app.UseDatabase(ctx, *database); err != nil {
			return err
		}
	}
	return app.Serve(ctx, ln, log)
}

func runDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", stderr)
	duration := fs.Duration("duration", 0, "stop after this long (default: run until Ctrl-C)")
	level := fs.String("log-level", "warn", "agent log level shown during the demo")
	floating := fs.Bool("floating", true, "also play act 2, a floating address across two balancer nodes in network namespaces (needs root)")
	database := fs.Bool("database", true, "also play act 3, the application's data in a PostgreSQL cluster whose primary is killed (needs root and PostgreSQL)")
	traffic := fs.Bool("traffic", true, "also play act 4, two regions and the DNS traffic manager (needs root)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return demo.Run(ctx, demo.Options{Out: stdout, Logger: newLogger(stderr, *level, false), Duration: *duration, Version: buildVersion(), Floating: *floating, Database: *database, Traffic: *traffic})
}

// count says "1 node", "2 nodes".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
