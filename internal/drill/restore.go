package drill

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill/pgwrite"
)

// Restorer restores the newest backup and the WAL archive into a scratch
// server, as the recovery of a lost region would, runs query on it and
// returns the first column of its first row and how long restore,
// recovery and query took.
type Restorer func(ctx context.Context, query string) (answer string, took time.Duration, err error)

// restoreScenario is the backup and restore tier's drill: nothing is
// broken; the drill measures what recovering from the backups alone would
// give back, and how long it takes.
var restoreScenario = Scenario{Name: "restore", Part: config.PartRegion,
	About: "the region's data recovered from the backups alone: the newest backup and the WAL archive restored into a scratch server while the writes go on"}

// RunRestore plays the restore drill: a writer commits through opt.DSN,
// then the newest backup and the archive are restored into a scratch
// server (restore), which is asked for the newest row the writer
// committed. The observed RTO is the restore's time (restore, recovery,
// query); the observed RPO the data between the last acknowledged write
// and the restored point; the writes the restore lacks are the lost ones.
// It is judged against the region's objectives by what it measured: a
// restore waits for a person in a real loss, which the design cannot
// bound, and this drill is how the person's part is measured.
func RunRestore(ctx context.Context, cfg *config.Config, opt Options, restore Restorer, log func(string)) (Result, error) {
	opt.defaults()
	if log == nil {
		log = func(string) {}
	}
	s := restoreScenario
	r := Result{Scenario: s.Name, About: s.About, Started: time.Now()}
	if opt.DSN == "" {
		return r, errors.New("drill restore: give the database as the application reaches it (--dsn or drills.dsn_file): the drill looks for its writes in the restored server")
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	w, done, err := startDB(wctx, opt.DSN, opt.Every)
	if err != nil {
		return r, err
	}
	log("workload: " + w.describe())
	if err := Sleep(ctx, opt.Warmup); err != nil {
		return r, err
	}
	at := time.Since(r.Started)
	r.Events = append(r.Events, Event{At: at, What: "restore of the newest backup and the archive begins (the writes go on)"})
	log("restoring the newest backup and the archive into a scratch server")
	answer, took, err := restore(ctx, fmt.Sprintf("SELECT coalesce(max(seq), 0) FROM %s WHERE run = %d", Table, w.run))
	stop()
	<-done
	if err != nil {
		return r, fmt.Errorf("drill restore: %w", err)
	}
	restored, err := strconv.Atoi(strings.TrimSpace(answer))
	if err != nil {
		return r, fmt.Errorf("drill restore: the restored server answered %q for the newest row", answer)
	}
	r.Length = time.Since(r.Started)
	r.Events = append(r.Events, Event{At: at + took, What: fmt.Sprintf("restored: the newest row there is write %d", restored)})
	ops := w.ops(r.Started)
	p := PartResult{Part: s.Part, Workload: w.describe() + "; restored from the backups", Outcomes: buckets(ops)}
	p.OK, p.Failed, p.Indeterminate = pgwrite.Tally(ops)
	p.RTO = took
	p.Lost, p.RPO = restoreLoss(ops, restored, at)
	p.JudgeMeasured(cfg)
	r.Parts = []PartResult{p}
	r.Met = p.Met
	for _, why := range p.Reasons {
		r.Reasons = append(r.Reasons, p.Part+": "+why)
	}
	return r, nil
}

// restoreLoss compares what was acknowledged before the restore began
// (at) with the newest write the restored server has: the writes after
// it are lost, and the RPO is the time between the restored write's
// acknowledgement and the last one before the restore.
func restoreLoss(ops []pgwrite.Write, restored int, at time.Duration) (lost []int, rpo time.Duration) {
	var last, point time.Duration = -1, 0
	for _, o := range ops {
		if o.Outcome != pgwrite.Acked || o.End > at {
			continue
		}
		last = max(last, o.End)
		switch {
		case o.Seq == restored:
			point = o.End
		case o.Seq > restored:
			lost = append(lost, o.Seq)
		}
	}
	if last < 0 || len(lost) == 0 {
		return lost, 0
	}
	if restored == 0 {
		point = ops[0].Start // nothing of the run was restored
	}
	return lost, last - point
}
