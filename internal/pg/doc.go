// Package pg runs one PostgreSQL server for haven: a data directory and the
// postgres process that haven starts, watches and stops itself.
//
// A Server finds the PostgreSQL binaries (FindBinaries), initialises its
// data directory with data checksums (Server.Init), and writes, on every
// start, the configuration haven must control: haven.conf, which
// postgresql.conf includes last, with the managed settings also given on
// the command line so that ALTER SYSTEM cannot undo them; pg_hba.conf; and
// pg_ident.conf, which lets haven connect as postgres over the unix socket
// by peer authentication, with no password. It runs postgres as a child
// process, as an unprivileged user, in a process group of its own, with a
// parent-death signal so that postgres shuts down when haven dies
// (Server.Start); stops it in the three PostgreSQL shutdown modes,
// escalating when a stop takes too long (Server.Stop); and reports an exit
// nobody asked for (Server.Done, Server.Wait), so that it can be started
// again in place.
//
// Over its own connection a Server answers the questions about
// replication: recovery state, timeline, WAL positions and system
// identifier (Server.Position, Server.SystemIdentifier), and pg_controldata
// for a stopped server (Server.ControlData). It holds the replication
// primitives: the replication role and physical slots on a primary
// (Server.EnsureReplicationUser, Server.CreateSlot, Server.Replication),
// clones with pg_basebackup (Server.Clone), promotion (Server.Promote),
// following a new primary by a reload (Server.Follow), quorum commit
// (Server.SetSynchronousStandbys) and rejoin with pg_rewind
// (Server.Rewind). QueryPeer asks another node's postgres the same
// questions over TCP.
//
// A Supervisor keeps a Server running. Its decisions are a pure state
// machine, driven by the server's exits and the times they happen: restart
// at once after a crash, a doubling backoff between failed starts
// (RestartPolicy), failed once postgres has been down for longer than a
// bound or crashes in a loop. It reports every change of State, with
// metrics haven_pg_server_*.
//
// A WriteFence puts the primary's port under a kernel dead-man's switch
// (nftables, package deadman): it lets traffic through only until the lease
// deadline the primary last renewed, so that a primary whose agent froze
// goes silent by itself.
//
// HealthHandler answers Patroni's HTTP health-check endpoints (/primary,
// /replica?lag=, /read-only, /health) for a load balancer such as HAProxy.
//
// Nothing here decides which server is the primary or talks to etcd: the
// cluster's keeper (package internal/pg/keeper) does, and calls these. The
// behaviour is documented for users in docs/pg.md.
package pg
