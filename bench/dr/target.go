package main

import (
	"context"
	"time"

	"github.com/haven-ha/haven/internal/netlab"
)

// target is one implementation of a two-region database: an active region
// that takes the writes and a standby region that replicates from it. The
// bench makes the network and the writers; a target starts its daemons on
// the network, says where each region takes writes, samples the standby
// region's lag, and carries out the region failover and the planned
// switchover its own way. A new target (haven's) implements these and adds
// a constructor to targetKinds; nothing else in the bench knows a target's
// insides.
type target interface {
	// Name is the target's name in -targets and in the report.
	Name() string
	// Describe says, in one markdown sentence for the report, what runs:
	// versions, settings, how the standby region follows the active one.
	Describe() string
	// Packages are the Debian packages the target needs (the bench
	// installs them under its -install policy before anything starts).
	Packages() []string
	// Start starts both regions on env.Net and returns once region east
	// is active (its primary takes writes through WriteEndpoint(east),
	// the writer's role and table exist: appUser, appPassword, tableSQL,
	// grantSQL) and region west's standby streams from it. On error
	// Close still runs.
	Start(ctx context.Context, env *env) error
	// WriteEndpoint is where a writer connects (host:port) to write in
	// region, for instance the region's router on its client. A region
	// that does not take writes refuses or drops the connection, or
	// answers as a server in recovery.
	WriteEndpoint(region string) string
	// Ready waits until active takes writes and the other region's
	// standby streams from it: the state before a fault or a
	// switchover.
	Ready(ctx context.Context, active string) error
	// Lag samples how far the standby region is behind the active one.
	Lag(ctx context.Context, active string) (lagSample, error)
	// Automatic reports whether the target makes the standby region
	// writable by itself when the active region is lost. The bench then
	// waits for it; otherwise it records that nothing happened within
	// -observe and calls Promote, as an operator would.
	Automatic() bool
	// Promote is the operator's action that makes region writable after
	// the other region was lost (its documented command). It returns
	// when the command returns, with what it printed.
	Promote(ctx context.Context, region string) (string, error)
	// Switchover moves the writes from the active region to the other by
	// the target's documented procedure, with both regions up. It returns
	// when the procedure's last step returned, with what it printed.
	Switchover(ctx context.Context, from string) (string, error)
	// Close stops what the target started (the bench closes the network
	// afterwards, which kills whatever is left) and keeps its logs in
	// env.RawDir. It is safe after a failed Start.
	Close()
}

// witnessed is a target that needs the witness host on segment 3 (a third
// place for its global coordination): the bench adds it to the cell's
// network.
type witnessed interface {
	Witness() bool
}

// noter is a target that reports what it had to do besides the scenario's
// steps (an operator's repair): the bench adds it to the run's notes.
type noter interface {
	Notes() []string
}

// env is what the bench gives a target: the network and the directories.
type env struct {
	Net *netlab.Net
	// Dir is the cell's own temporary directory (mode 0711, removed at
	// the end of the run unless -keep).
	Dir string
	// RawDir keeps the run's logs and raw results; a target writes its
	// daemons' output there as Label-HOST-N.log.
	RawDir string
	// Label names the cell (scenario-target, with the run for the region
	// loss) in file names.
	Label string
	// Root is the repository.
	Root string
	// HavenBin is haven's binary, built from the working tree once per
	// run when a target's name starts with "haven"; HavenErr says why
	// the build failed.
	HavenBin string
	HavenErr error
	// Bindir is PostgreSQL's binary directory.
	Bindir string
	// Settle bounds how long a target may take to start and to be ready.
	Settle time.Duration
	// WANDelay is the one-way delay between the regions the network adds
	// (0: none).
	WANDelay time.Duration
}

// lagSample is one sample of the standby region's lag: how many bytes of
// WAL the active primary has written that the standby region's leader has
// not received and not replayed, and how old the last transaction it
// replayed is (now minus its commit time; under a writer committing every
// interval this is the replay delay plus up to one interval).
type lagSample struct {
	At            time.Time     `json:"at"`
	ReceivedBytes int64         `json:"received_bytes"`
	ReplayedBytes int64         `json:"replayed_bytes"`
	ReplayDelay   time.Duration `json:"replay_delay_ns"`
}

// targetKinds makes the targets by name, in -targets order.
var targetKinds = []struct {
	name string
	make func() target
}{
	{"haven", func() target { return newHaven("haven", "async") }},
	{"haven-sync", func() target { return newHaven("haven-sync", "sync") }},
	{"patroni", func() target { return newPatroni("patroni", 30, 10, 10) }},
	{"patroni-fast", func() target { return newPatroni("patroni-fast", 10, 2, 4) }},
}

const defaultTargets = "haven,patroni,patroni-fast"

func findTarget(name string) (func() target, bool) {
	for _, k := range targetKinds {
		if k.name == name {
			return k.make, true
		}
	}
	return nil, false
}

// isHaven reports whether a target's name is one of haven's (the report
// puts them in the ratio table's denominator).
func isHaven(name string) bool { return len(name) >= 5 && name[:5] == "haven" }
