package coord

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// freezer is a TCP proxy that can stop forwarding while keeping its
// connections open: a member frozen by SIGSTOP, as its clients see it.
type freezer struct {
	ln     net.Listener
	mu     sync.Mutex
	thawed chan struct{} // closed while forwarding
}

func startFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, thawed: make(chan struct{})}
	close(f.thawed)
	var conns sync.WaitGroup
	t.Cleanup(func() { f.thaw(); ln.Close(); conns.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			conns.Add(2)
			go func() { defer conns.Done(); f.pipe(u, c) }()
			go func() { defer conns.Done(); f.pipe(c, u) }()
		}
	}()
	return f
}

func (f *freezer) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		f.mu.Lock()
		thawed := f.thawed
		f.mu.Unlock()
		<-thawed
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				return
			}
			return
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.thawed = make(chan struct{})
}

func (f *freezer) thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.thawed:
	default:
		close(f.thawed)
	}
}

// A watch on a member that freezes neither delivers nor fails on its own
// (gRPC's keepalive pings are at least 10s apart): the session must see
// it stalled and end, so that the next one goes to a member that answers.
func TestWatchSessionEndsWhenItsMemberFreezes(t *testing.T) {
	log := testLog(t)
	cfg := clusterConfigs(t, log, 1, "watch", "")[0]
	waitReady(t, startMember(t, cfg))
	f := startFreezer(t, cfg.ClientURL)
	cli := newTestClient(t, log, []string{f.ln.Addr().String()}, nil)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	listed := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- watchPrefix(ctx, cli, "/t/", func(map[string]string) {
			select {
			case listed <- struct{}{}:
			default:
			}
		})
	}()
	select {
	case <-listed:
	case err := <-done:
		t.Fatalf("the watch ended before its member froze: %v", err)
	}
	// Quiet for a few progress rounds: an idle, healthy watch lives on.
	select {
	case err := <-done:
		t.Fatalf("an idle watch on a healthy member ended: %v", err)
	case <-time.After(3 * watchStallAfter):
	}
	f.freeze()
	select {
	case err := <-done:
		if !errors.Is(err, errWatchStalled) {
			t.Errorf("the watch on a frozen member ended with %v, want %v", err, errWatchStalled)
		}
	case <-ctx.Done():
		t.Fatal("the watch on a frozen member never ended")
	}
}
