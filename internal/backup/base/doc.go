// Package base takes base backups of a PostgreSQL 15 data directory into
// a repository, verifies them, and restores them for point-in-time
// recovery from the WAL archive (internal/backup/wal).
//
// Take works as pgBackRest does with local access to the data directory.
// On one session, held for the whole copy, it runs the non-exclusive
// pg_backup_start(label, fast => true), which checkpoints (a restartpoint
// on a replica) and returns the start LSN; it copies the data directory's
// files with Workers goroutines, each file read once through a SHA-256
// hash and a compressor (none, lz4, zstd) into its own object; then
// pg_backup_stop(wait_for_archive => false) returns the stop LSN and the
// backup_label and tablespace_map contents, which are stored as files of
// the backup. Pages torn by concurrent writes are repaired by replaying
// the WAL from the start LSN (full_page_writes), so a backup needs the
// archive to hold the WAL from its start to its stop: Take waits for it
// (WALWait, a minute) and fails if it does not come. Only then is the
// manifest written, last:
//
//	<cluster>/base/<label>/data/<path>[.lz4|.zst]  one object per file
//	<cluster>/base/<label>/manifest.json           files, sizes, checksums, LSNs
//
// A backup without a manifest (killed, cancelled, failed) is not complete:
// List does not show it and Restore cannot use it. If the session ends
// before pg_backup_stop, the server aborts the backup itself.
//
// From a replica: pg_backup_start and pg_backup_stop work during recovery.
// The start LSN is the redo point of the last restartpoint, which follows
// the primary's checkpoints (a replica cannot make one), so the WAL needed
// can begin up to checkpoint_timeout before the backup; the stop LSN is
// the last replayed position; full_page_writes must be on at the primary
// (pg_backup_stop checks); and a promotion during the backup makes
// pg_backup_stop fail. The WAL comes from the primary's archiver, so the
// archive must hold it: Take checks, as for a primary.
//
// An incremental backup copies the files whose size or modification time
// (nanoseconds) changed since the newest complete backup, and refers to
// that backup's copy of the others (File.Ref, always the backup that
// holds the bytes, so a restore follows one reference per file). Changes
// are found per file, not per page.
//
// Restore fetches every file in parallel, checks its size and checksum
// while writing it (a mismatch names the file and stops the restore),
// appends restore_command and the recovery target to
// postgresql.auto.conf, writes recovery.signal, and writes
// global/pg_control last, so that a restore that did not finish leaves a
// directory PostgreSQL will not start.
package base
