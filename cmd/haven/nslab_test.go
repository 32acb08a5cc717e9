package main

import (
	"context"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testnet"
)

// nsLab is haven agents on namespace hosts, and the CLI run in the first
// host's namespace, where every admin address is reachable.
type nsLab struct {
	t      *testing.T
	n      *testnet.Net
	bin    string
	agents map[string]*testnet.Proc
	first  *testnet.Host // where the CLI runs
}

func newNSLab(t *testing.T, hosts ...string) *nsLab {
	t.Helper()
	n := testnet.Start(t, testnet.Options{Hosts: hosts})
	return &nsLab{t: t, n: n, bin: testenv.Haven(t), agents: map[string]*testnet.Proc{}, first: n.Host(hosts[0])}
}

// start runs node's agent with the file cfg.
func (l *nsLab) start(node, cfg string) {
	l.t.Helper()
	p, err := l.n.Host(node).Start(context.Background(), l.bin, "agent", "-c", cfg, "-n", node)
	if err != nil {
		l.t.Fatal(err)
	}
	l.agents[node] = p
}

// lost forgets node's agent once it was killed: alive no longer checks it.
func (l *nsLab) lost(node string) { delete(l.agents, node) }

// alive fails the test when an agent it started has exited.
func (l *nsLab) alive() {
	l.t.Helper()
	for node, p := range l.agents {
		select {
		case <-p.Done():
			l.t.Fatalf("%s's agent exited:\n%s", node, p.Output())
		default:
		}
	}
}

// cli runs haven with args and -c cfg in the first host's namespace.
func (l *nsLab) cli(cfg string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := l.first.Command(ctx, l.bin, append(args, "-c", cfg)...).CombinedOutput()
	return string(out), err
}
