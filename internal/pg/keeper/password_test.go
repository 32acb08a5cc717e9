package keeper

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/coord"
)

// A single node needs no replication password, as haven.yaml says
// (password_file is required with two or more nodes): no replica connects
// as the role, so the keeper leads without creating it, and its rounds
// warn about nothing. Two nodes without a password are refused at New.
func TestSingleNodeWithoutPassword(t *testing.T) {
	etcd := startEtcd(t)
	node := newNode(t, "db1")
	cli, err := coord.NewClient(context.Background(), coord.ClientConfig{Endpoints: []string{etcd}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	cfg := Config{
		Server: node.Server, Client: cli, Cluster: "solo", Name: "main",
		Node: "db1", Nodes: []string{"db1"}, Host: "127.0.0.1", Lease: time.Second,
		// sync: the round that sets the role up goes on to write the sync
		// record (async has no such step), once sync mode has degraded
		// for want of a standby.
		Mode: ModeSync, Logger: node.logger,
	}
	two := cfg
	two.Nodes = []string{"db1", "db2"}
	if _, err := New(two); err == nil || !strings.Contains(err.Error(), "a password is required with 2 nodes") {
		t.Errorf("New with two nodes and no password: %v, want the password required", err)
	}
	k, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	// Once the sync record names db1, setUp has passed.
	waitFor(t, "db1 the primary, set up", func() (string, bool) {
		m := k.Members()["db1"]
		return fmt.Sprintf("%+v %+v", m, k.Sync()), m.Role == RolePrimary && k.Sync().Leader == "db1"
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if log := node.log.String(); strings.Contains(log, "keeper step") {
		t.Errorf("a single node without a password warned:\n%s", log)
	}
}
