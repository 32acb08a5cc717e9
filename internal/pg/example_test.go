package pg_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/haven-ha/haven/internal/pg"
	"github.com/prometheus/client_golang/prometheus"
)

// ExampleServer is the example of docs/pg.md; TestDocExamples checks that
// the two agree. It has no output to check: it needs root and PostgreSQL.
func ExampleServer() {
	ctx := context.Background()
	if err := runServer(ctx, slog.Default()); err != nil {
		fmt.Println(err)
	}
}

func runServer(ctx context.Context, logger *slog.Logger) error {
	srv, err := pg.New(ctx, pg.Config{
		DataDir:         "/var/lib/haven/pg/data",
		ListenAddresses: []string{"198.18.1.21"},
		Settings:        map[string]string{"shared_buffers": "1GB"},
		HBA:             []string{"host all all 198.18.1.0/24 scram-sha-256"},
		Logger:          logger,
	})
	if err != nil {
		return err
	}
	if err := srv.Init(ctx); err != nil && !errors.Is(err, pg.ErrInitialized) {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	pos, err := srv.Position(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("primary: %v, timeline %d, at %v\n", !pos.InRecovery, pos.Timeline, pos.Current)
	select {
	case <-srv.Done():
		return srv.Wait() // a crash: the keeper restarts it with Start
	case <-ctx.Done():
		stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return srv.Stop(stopCtx, pg.StopFast)
	}
}

// ExampleServer_Clone is the replication example of docs/pg.md. The two
// servers are on two nodes, each with its own keeper; the example shows
// both sides in one function. It has no output to check.
func ExampleServer_Clone() {
	ctx := context.Background()
	primary, err1 := pg.New(ctx, pg.Config{DataDir: "/var/lib/haven/pg/data", Name: "db1"})
	replica, err2 := pg.New(ctx, pg.Config{DataDir: "/var/lib/haven/pg/data", Name: "db2"})
	if err := errors.Join(err1, err2); err != nil {
		fmt.Println(err)
		return
	}
	if err := runReplica(ctx, primary, replica, "s3cret"); err != nil {
		fmt.Println(err)
	}
}

// runReplica is the replication example of docs/pg.md: primary runs on
// 198.18.1.21, replica is db2 with an empty data directory.
func runReplica(ctx context.Context, primary, replica *pg.Server, password string) error {
	// On the primary: the role replicas connect as, and a slot for db2.
	if err := primary.EnsureReplicationUser(ctx, pg.DefaultReplicationUser, password); err != nil {
		return err
	}
	if err := primary.CreateSlot(ctx, "db2"); err != nil {
		return err
	}
	// On db2 (Config.Name "db2", an empty data directory): clone and stream.
	up := pg.Upstream{Host: "198.18.1.21", Port: 5432, Password: password, Slot: "db2"}
	if err := replica.Clone(ctx, up); err != nil {
		return err
	}
	// On the primary: every commit waits for db2 or db3.
	standbys, err := primary.SetSynchronousStandbys(ctx, 1, []string{"db2", "db3"})
	if err != nil {
		return err
	}
	for _, st := range standbys {
		fmt.Printf("%s: %s, %s, replayed %v\n", st.Name, st.State, st.SyncState, st.Replay)
	}
	return nil
}

// ExampleSupervisor is the supervision example of docs/pg.md. It has no
// output to check: it needs root and PostgreSQL.
func ExampleSupervisor() {
	ctx := context.Background()
	srv, err := pg.New(ctx, pg.Config{DataDir: "/var/lib/haven/pg/data"})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := runSupervised(ctx, srv, slog.Default(), prometheus.NewRegistry()); err != nil {
		fmt.Println(err)
	}
}

// runSupervised is the supervision example of docs/pg.md.
func runSupervised(ctx context.Context, srv *pg.Server, logger *slog.Logger, reg prometheus.Registerer) error {
	sup, err := pg.NewSupervisor(srv, pg.RestartPolicy{GiveUpAfter: 30 * time.Second}, logger, reg)
	if err != nil {
		return err
	}
	changed := make(chan struct{}, 1)
	sup.OnChange(func(pg.Status) {
		select {
		case changed <- struct{}{}: // wake the keeper; it reads Status
		default:
		}
	})
	go func() {
		for range changed {
			st := sup.Status()
			fmt.Printf("postgres %v since %v, %d restarts, last error: %v\n", st.State, st.Since, st.Restarts, st.LastError)
			// The keeper gives up leadership unless st.State is pg.StateRunning,
			// and declares the node ineligible in pg.StateFailed.
		}
	}()
	defer close(changed)
	return sup.Run(ctx) // until ctx ends; postgres is stopped then
}
