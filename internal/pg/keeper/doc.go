// Package keeper runs one node's side of haven's PostgreSQL cluster: it
// keeps the node's postgres (a pg.Server under a pg.Supervisor) running as
// the primary while the node holds the database's ownership record in etcd
// (coord.Owner), and as a replica of the holder otherwise. It initialises
// the cluster, clones, promotes, follows a new primary, rewinds a former
// one, keeps the synchronous standbys, and publishes each node's state
// (MemberState), from which routers compute where clients go (Routes).
//
// The behaviour is documented for users in docs/pg.md and docs/database.md.
package keeper
