// Package pg runs PostgreSQL for haven's database keeper.
//
// This is the foundation of the keeper described in issue 4: a supervised
// PostgreSQL server for one data directory (Server). It finds the
// PostgreSQL binaries (FindBinaries), initialises a data directory with data
// checksums (Server.Init), owns the configuration that haven must control
// (haven.conf, pg_hba.conf, pg_ident.conf), runs `postgres` as a child
// process as an unprivileged user (Server.Start), stops it in the three
// PostgreSQL shutdown modes (Server.Stop), reports an exit nobody asked for
// (Server.Done, Server.Wait) so that it can be restarted in place, and
// answers the questions the keeper asks about replication: recovery state,
// timeline, WAL positions and system identifier (Server.Position,
// Server.SystemIdentifier, Server.ControlData).
//
// It also holds the replication primitives the keeper calls: the
// replication role and physical slots on a primary
// (Server.EnsureReplicationUser, Server.CreateSlot, Server.Replication),
// clones (Server.Clone), promotion (Server.Promote), following a new
// primary (Server.Follow), quorum commit (Server.SetSynchronousStandbys)
// and rejoin with pg_rewind (Server.Rewind).
//
// A Supervisor keeps a Server running: it restarts a crashed postgres in
// place, retries failing starts with a backoff (RestartPolicy), reports the
// server failed once it has been down for longer than a bound, and tells
// the keeper of every change of State, with metrics haven_pg_server_*.
//
// HealthHandler answers Patroni's HTTP health-check endpoints (/primary,
// /replica?lag=, /read-only, /health) for a load balancer such as HAProxy,
// from the Server and the node's leadership (NodeState).
//
// Leadership, failover and rejoin decisions are built on top of it, in the
// keeper; nothing here talks to etcd.
//
// The behaviour is documented for users in docs/pg.md.
package pg
