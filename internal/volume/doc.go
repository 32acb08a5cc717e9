// Package volume runs a replicated file volume for the application's files
// (uploads, a document root) on GlusterFS, the guide's choice: a brick on
// each of three storage nodes in one replica set, and a FUSE mount on each
// application node.
//
// On a storage node, Glusterd runs glusterd with all its state under one
// directory, and Storage keeps the volume as haven.yaml describes it: the
// servers probed into one trusted pool (under an etcd lock, so that two
// servers never start two pools), the volume created and started, haven's
// options in force, and the node's own brick running: GlusterFS leaves a
// brick that died dead until someone runs `gluster volume start NAME
// force`, so Storage does, within one reconciliation (5s).
//
// The options are what makes the volume survive a server without a stall
// or a split-brain file. A client writes every change to every brick it
// reaches; when a server dies without closing its connections (a power
// loss, a cut link), the client waits network.ping-timeout for it before it
// goes on with the others, and GlusterFS's 42s default is a 42-second
// stall of every writer: haven sets seconds. Client quorum (quorum-type
// auto) lets a client write only while it reaches a majority of the
// bricks, so that the two sides of a partition never both change a file;
// server quorum stops the bricks of a glusterd cut off from the majority
// of the pool. The self-heal daemon on every server copies what a brick
// missed once it is back.
//
// On an application node, Mount keeps the volume mounted with the FUSE
// client, naming every server (the first that answers gives the volume's
// definition), mounts it again when the client exits, and answers Probe:
// mounted, not read-only, and a file written and synced through the mount
// within the caller's deadline. The agent serves that answer to the
// balancer's volume check, so an application node whose files are gone
// leaves the pool.
package volume
