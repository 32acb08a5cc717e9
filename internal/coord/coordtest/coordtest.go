// Package coordtest runs a one-member embedded etcd for other packages'
// tests.
package coordtest

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/testenv"
)

// StartMember runs a one-member embedded etcd on loopback until the test
// ends and returns its client URL (http://127.0.0.1:PORT) and a function
// that stops it earlier (for tests of a lost etcd); stopping twice is fine.
func StartMember(t testing.TB) (url string, stop func()) {
	t.Helper()
	addrs := freeAddrs(t, 2)
	peer, client := addrs[0], addrs[1]
	m, err := coord.NewMember(coord.MemberConfig{
		Name: "etcd", DataDir: testenv.MemoryDir(t), PeerURL: peer, ClientURL: client,
		InitialCluster: map[string]string{"etcd": peer}, ClusterToken: "test",
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("etcd did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-m.Ready():
	case err := <-done:
		done <- err // for stop, which the cleanup calls
		t.Fatalf("etcd: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("etcd not ready after 30s")
	}
	return "http://" + client, stop
}

// freeAddrs returns n loopback addresses whose ports were free a moment
// ago, below the ephemeral range, and differ from each other
// (testenv.FreeAddr).
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		addrs = append(addrs, testenv.FreeAddr(t, "127.0.0.1"))
	}
	return addrs
}
