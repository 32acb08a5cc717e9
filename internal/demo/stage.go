package demo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/haven-ha/haven/internal/netlab"
)

// defaults fills in what opt leaves out.
func (opt Options) defaults() Options {
	if opt.Phase == 0 {
		opt.Phase = 3 * time.Second
	}
	return opt
}

// playAct plays one of the acts in network namespaces when the demo asks
// for it (want) and the machine allows it (canRun), and otherwise says why
// it skipped it. A nil result means it did not play.
func playAct[R any](ctx context.Context, opt Options, want bool, act string, canRun func() error,
	run func(context.Context, Options) (*R, error)) (*R, error) {
	if !want {
		return nil, nil
	}
	if why := canRun(); why != nil {
		fmt.Fprintf(opt.Out, "\n%s skipped: %v\n", act, why)
		return nil, nil
	}
	return run(ctx, opt)
}

// stage is where an act in network namespaces plays: this binary, which
// the act starts on the hosts as agents and backends, a temporary
// directory for the act's files, and the network.
type stage struct {
	exe, dir string
	net      *netlab.Net
}

// newStage sets up an act's stage: its directory (kind names it), the
// files files makes from the directory's path, written there with mode
// 0600, and the network (hosts, on segment 1; the options' other fields
// add segments). The caller closes it.
func newStage(ctx context.Context, kind string, hosts netlab.Options, files func(dir string) map[string]string) (*stage, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("demo: find the haven binary: %w", err)
	}
	dir, err := os.MkdirTemp("", "haven-demo-"+kind+"-")
	if err != nil {
		return nil, err
	}
	s := &stage{exe: exe, dir: dir}
	// 0711: postgres, which runs as its own user, must reach its data
	// directories below; the files themselves stay the agents' (0600).
	if err := os.Chmod(dir, 0o711); err != nil {
		s.close()
		return nil, err
	}
	for name, content := range files(dir) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			s.close()
			return nil, err
		}
	}
	if s.net, err = netlab.New(ctx, hosts); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// path is a file of the stage's directory.
func (s *stage) path(name string) string { return filepath.Join(s.dir, name) }

// close removes the network, and everything that runs in it, and the
// directory.
func (s *stage) close() {
	if s.net != nil {
		s.net.Close()
	}
	os.RemoveAll(s.dir)
}
