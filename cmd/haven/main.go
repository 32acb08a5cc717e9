// Command haven makes a self-hosted web service highly available: see
// `haven help` and docs/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=..."; without
// it the module version or VCS revision is used.
var version = ""

const usage = `haven — high availability and disaster recovery for a self-hosted web service

usage:
  haven agent  -c haven.yaml -n NODE     run the roles haven.yaml assigns to NODE
  haven check  -c haven.yaml [-n NODE]   validate the file (and this machine for NODE); exit 1 listing every problem
  haven doctor [-n NODE] [-c haven.yaml] this machine for NODE (capabilities, nftables, PostgreSQL, ports, clock, peers, disks), or without -n the running cluster
  haven lb     ACTION [BACKEND] ...      drain | enable | maint | weight | status (see haven lb -h)
  haven vip    move --to NODE | status   hand a floating address over; show its holder (see haven vip -h)
  haven db     status | bootstrap NODE | ...   the database, whatever its engine: PostgreSQL's actions as haven pg, Galera's bootstrap (see haven db -h)
  haven volume status [NAME] | heal NAME | restore NAME --to DIR   the replicated file volumes: bricks, heals, quorum, mounts, the copy (see haven volume -h)
  haven pg     switchover [--to NODE] | pause | resume | reinit NODE | status   the database's primary, maintenance mode, a rebuilt replica, the members (see haven pg -h)
  haven restart [NODE...]                restart the agents one at a time (an upgrade), the database's primary last, after a switchover
  haven coord  members | replace OLD --with NEW | add | remove | snapshot FILE | defrag | alarms disarm   the etcd members (see haven coord -h)
  haven dr     status | switchover --to REGION | promote REGION   the active region of a database across two (see haven dr -h)
  haven drill  fault -n NODE --kind KIND --for D | faults | stop -n NODE ID   faults for drills (see haven drill -h)
  haven dns    serve | drain|enable NAME TARGET | status   one name server alone; a DNS target out of the answers; the answers (see haven dns -h)
  haven backup ACTION ...                list | verify | restore | expire | check (a restore test) | wal-fetch (restore_command) (see haven backup -h)
  haven certs  -c haven.yaml -o DIR      make a private CA and node certificates for etcd TLS
  haven status -c haven.yaml [-n NODE]   show what each node's agent reports
  haven events [--limit N] [-f] [-o json] the cluster's timeline: health transitions, ownership changes, promotions, drains, reloads, operator calls
  haven demo   [--duration D]            run the demo: a balancer on loopback; as root, a floating address, the database, DNS
  haven backend --listen ADDR --name N   run the demo web application (used by tests and benchmarks)
  haven completion bash                  print bash's completion for haven (actions, nodes, backends, regions)
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
	case "doctor":
		err = runDoctor(rest, stdout, stderr)
	case "lb":
		err = runLB(rest, stdout, stderr)
	case "status":
		err = runStatus(rest, stdout, stderr)
	case "events":
		err = runEvents(rest, stdout, stderr)
	case "vip":
		err = runVIP(rest, stdout, stderr)
	case "db":
		err = runDB(rest, stdout, stderr)
	case "volume":
		err = runVolume(rest, stdout, stderr)
	case "pg":
		err = runPG(rest, stdout, stderr)
	case "coord":
		err = runCoord(rest, stdout, stderr)
	case "restart":
		err = runRestart(rest, stdout, stderr)
	case "dr":
		err = runDR(rest, stdout, stderr)
	case "drill":
		err = runDrill(rest, stdout, stderr)
	case "dns":
		err = runDNS(rest, stdout, stderr)
	case "backup":
		err = runBackup(rest, stdout, stderr)
	case "certs":
		err = runCerts(rest, stdout, stderr)
	case "demo":
		err = runDemo(rest, stdout, stderr)
	case "backend":
		err = runBackend(rest, stderr)
	case "completion":
		err = runCompletion(rest, stdout, stderr)
	case "__complete":
		err = runComplete(rest, stdout)
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
		switch {
		case errors.Is(err, errHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		}
		fmt.Fprintln(stderr, "haven:", err)
		var ce codedError
		if errors.As(err, &ce) {
			return ce.code
		}
		return 1
	}
	return 0
}

var errUsage = errors.New("usage")

// codedError is an error that exits with its own code.
type codedError struct {
	code int
	err  error
}

func (e codedError) Error() string { return e.err.Error() }
func (e codedError) Unwrap() error { return e.err }

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
