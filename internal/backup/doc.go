// Package backup gives a haven database cluster base backups, a continuous
// WAL archive and point-in-time restore, kept in one or more repositories
// (internal/backup/repo).
//
// A repository holds any number of clusters, each under its own name:
//
//	<cluster>/cluster.json        who owns this directory: the cluster's name and
//	                              PostgreSQL system identifier; a second cluster
//	                              pointed at the same place is refused
//	<cluster>/wal/<segment>       a whole WAL segment, 16 MiB, named as in pg_wal
//	<cluster>/wal/<segment>.<offset>.partial
//	                              a piece of a segment being filled: its bytes
//	                              from <offset> (8 hex digits) on; deleted once
//	                              the whole segment is stored
//	<cluster>/wal/<tli>.history   a timeline's history file, stored before any
//	                              of the timeline's WAL (see internal/backup/wal)
//	<cluster>/base/<label>/...    one base backup: its files, then its manifest,
//	                              written last: a backup without a manifest is
//	                              not complete and is never restored from
//
// The subpackages do one job each: repo stores objects; wal streams WAL
// from the primary into a repository and fetches it back for recovery; the base backup copies a
// data directory; restore puts both back.
package backup
