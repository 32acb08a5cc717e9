// Package coord is haven's coordination layer on etcd: an embedded etcd
// member that agents run on the nodes haven.yaml names under
// coordination.members (Member), a client tuned for fast failover that
// checks the cluster answers before returning (NewClient), the membership
// registry where every agent publishes itself on a lease (Publisher,
// WatchMembers), and ownership records with fencing for singleton roles
// (Owner; the safety argument is in docs/coordination.md).
//
// Keys live under /haven/<cluster>/, so that several haven clusters can share
// an external etcd.
//
// Everything long-running follows haven's lifecycle: a constructor without
// side effects, Run(ctx) that blocks until ctx ends and undoes what it
// started before returning.
package coord
