package pg_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/haven-ha/haven/internal/pg"
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
