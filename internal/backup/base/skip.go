package base

import (
	"path"
	"strings"
)

// skippedContents are the directories whose contents a backup leaves
// out, keeping the directory itself: PostgreSQL's "Backing Up the Data
// Directory" (continuous archiving, section 26.3.3) and pg_basebackup's
// exclusion list. pg_wal comes from the archive; the others are rebuilt or
// emptied when the server starts (replication slots, shared memory
// segments, LISTEN/NOTIFY, serializable and exported snapshots, the
// statistics collector's temporary files, subtransactions).
var skippedContents = map[string]bool{
	"pg_wal":       true,
	"pg_replslot":  true,
	"pg_dynshmem":  true,
	"pg_notify":    true,
	"pg_serial":    true,
	"pg_snapshots": true,
	"pg_stat_tmp":  true,
	"pg_subtrans":  true,
}

// skippedFiles are files at the top of the data directory a backup leaves
// out: the running server's lock and options, the backup_label and
// tablespace_map a backup takes from pg_backup_stop instead, a replica's
// standby.signal and a recovering server's recovery.signal (a restore
// writes its own), and a half-written ALTER SYSTEM.
var skippedFiles = map[string]bool{
	"postmaster.pid":           true,
	"postmaster.opts":          true,
	"backup_label":             true,
	"tablespace_map":           true,
	"backup_manifest":          true,
	"standby.signal":           true,
	"recovery.signal":          true,
	"postgresql.auto.conf.tmp": true,
	"current_logfiles":         true,
}

// skip reports whether the backup leaves out rel, a slash-separated path
// in the data directory, and if it is a directory, everything below it.
// Directories in skippedContents are kept, empty: their contents are
// skipped. pg_wal/archive_status is kept, empty, as pg_basebackup does.
func skip(rel string, dir bool) bool {
	if skippedFiles[rel] && !dir {
		return true
	}
	base := path.Base(rel)
	// Temporary files and directories of sorts and hashes, anywhere.
	if strings.HasPrefix(base, "pgsql_tmp") {
		return true
	}
	// The relation cache's init file is rebuilt at start.
	if strings.HasPrefix(base, "pg_internal.init") {
		return true
	}
	parent := path.Dir(rel)
	if skippedContents[parent] {
		return !(dir && rel == "pg_wal/archive_status")
	}
	return false
}

// unloggedForks returns the files of a database directory's listing that
// belong to unlogged relations, other than their init forks: a restored
// unlogged relation is reset from its init fork, so its other forks are
// not worth copying (pg_basebackup and pgBackRest leave them out too).
func unloggedForks(names []string) map[string]bool {
	unlogged := map[string]bool{}
	for _, n := range names {
		if rel, ok := strings.CutSuffix(n, "_init"); ok && isDigits(rel) {
			unlogged[rel] = true
		}
	}
	if len(unlogged) == 0 {
		return nil
	}
	skip := map[string]bool{}
	for _, n := range names {
		if strings.HasSuffix(n, "_init") {
			continue
		}
		rel := n
		if i := strings.IndexAny(rel, "._"); i >= 0 {
			rel = rel[:i]
		}
		if unlogged[rel] {
			skip[n] = true
		}
	}
	return skip
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
