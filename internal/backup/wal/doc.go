// Package wal keeps a database cluster's continuous WAL archive in a
// repository, and gives it back to a restore.
//
// An Archiver streams WAL from the server over the replication protocol,
// as pg_receivewal does: its own physical replication slot (DefaultSlot,
// created if missing, reserving WAL), IDENTIFY_SYSTEM, then
// START_REPLICATION from the start of the segment where the repository's
// archive ends. It reports as flushed only what the repository holds, so
// the slot keeps on the server every byte not yet archived: an archiver
// killed at any moment, or a repository down for a while, loses nothing;
// the next one starts again where the repository ends.
//
// Objects in a repository are written whole and never appended to (S3
// objects cannot be), so a segment being filled is stored in pieces:
//
//	<cluster>/wal/000000010000000000000003                   a whole segment, 16 MiB
//	<cluster>/wal/000000010000000000000004.00000000.partial  its first piece: bytes 0..n
//	<cluster>/wal/000000010000000000000004.0001A000.partial  the next, from offset 0x1A000
//	<cluster>/wal/00000002.history                           timeline 2's history file
//
// Every FlushInterval (one second by default) the archiver stores what it
// received since the last piece as a new piece, named by its offset in
// the segment (8 hex digits, so names sort by offset). When a segment is
// complete it stores the whole segment, then deletes its pieces. A
// segment has a whole object, or pieces from offset 0 with no gap, or
// both for a moment (the whole object wins). Where the archive ends is
// read from the names alone: the last segment named, whole or as far as
// its pieces reach.
//
// When the server's timeline ends (a promotion), the stream ends; the
// archiver asks for the new timeline's history (TIMELINE_HISTORY), stores
// its .history file before any of the new timeline's WAL, and streams the
// new timeline from the start of the segment where it branched. The old
// timeline's last segment stays as pieces: it is partial, as it is on the
// old primary.
//
// In synchronous mode the archiver stores a piece as soon as the previous
// store ends, and its ApplicationName, put in synchronous_standby_names
// (the keeper does, keeper.Config.SyncArchive), makes commits wait until
// the repository holds them. When the archive holds WAL of an old
// timeline past the point where the server's timeline branched (the old
// primary's unacknowledged writes), the archiver logs it and follows the
// new timeline from the branch point.
//
// Fetch is restore_command's side: it writes a segment from its whole
// object, or assembled from its pieces and padded with zeros to 16 MiB,
// the size PostgreSQL requires of a restored segment; recovery reads the
// zeros as the end of the WAL, as in a .partial file of pg_receivewal.
package wal
