// Package keeper runs one node's side of haven's PostgreSQL cluster.
//
// Which node is the primary is an ownership record in etcd (coord.Owner,
// under /haven/<cluster>/owners/pg/<name>): renewed by compare-and-swap,
// with a fencing epoch, held by a node that stops acting on its own clock
// before any other node may take it. The keeper of the holder runs its
// postgres (a pg.Server under a pg.Supervisor) as the primary: it
// initialises the cluster if nobody has, or promotes its replica once the
// other replicas' postgres, asked directly, confirm that none has more WAL;
// then it keeps the replication role, a slot for every other node and, in
// sync and strict mode, the synchronous standbys. With a synchronous WAL
// archive (Config.SyncArchive) every commit also waits for the archiver,
// in every mode: the leader names exactly k replicas and the archiver, all
// required, since synchronous_standby_names cannot say "the archiver and
// k of n" (machine.syncTarget). Every other node's
// keeper runs postgres as a replica of the holder: it clones, follows a new
// primary by a reload, and rewinds when its data may have diverged. A node
// that lets go of the record stops postgres before the record is released
// (its Guard), and its write fence (pg.WriteFence) silences a primary whose
// agent froze.
//
// Every keeper publishes its node's state in etcd (MemberState, on a 5 s
// lease): role, WAL position, timeline, lag, and why it may not be
// promoted. From these and the leader's sync record (SyncState) each node
// decides whether it may lead: a replica of the same database, on the last
// primary's timeline, not behind another promotable replica and, in sync
// and strict mode, one of enough visible synchronous standbys that one of
// them has every acknowledged commit. Routers follow the same states and
// the record (Routes, WatchRoutes).
//
// The decisions are a pure state machine (machine.go). Each round the
// Keeper looks (the time, its lead, postgres, the members, the sync
// record), the machine says what to do, and the Keeper does it and tells
// the machine what came of it. The machine reads no clock, postgres or
// etcd, so its decisions are tested by tables and in simulated time
// (sim_test.go); the Keeper is tested against real PostgreSQL and etcd.
//
// The behaviour is documented for users in docs/pg.md (the keeper's rules)
// and docs/database.md (running the cluster).
package keeper
