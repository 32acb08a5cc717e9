package main

import (
	"fmt"
	"io"
	"time"

	"github.com/haven-ha/haven/internal/agent"
)

// printBackup prints the backups as the database nodes that answered see
// them: the newest backup (from the node that has listed the latest), the
// next one due, the one running, the last attempt's failure, the WAL
// archive as the node that runs it reports it, and each node's error with
// the repository.
func printBackup(w io.Writer, as []answer[*agent.DatabaseStatus], now time.Time) {
	var b *agent.BackupStatus
	var arch *agent.ArchiveStatus
	for _, a := range as {
		if a.err != nil || a.val == nil || a.val.Backup == nil {
			continue
		}
		s := a.val.Backup
		if b == nil || (s.Newest != nil && (b.Newest == nil || s.Newest.Label > b.Newest.Label)) {
			b = s
		}
		if s.Archive != nil && (arch == nil || s.Archive.Archiving) {
			arch = s.Archive
		}
	}
	if b == nil {
		return
	}
	fmt.Fprintf(w, "\nbackups (%s):\n", b.Repository)
	describe := func(i *agent.BackupInfo) string {
		return fmt.Sprintf("%s %s, %s (stored %s), %s ago", i.Label, i.Kind, size(i.Bytes), size(i.Stored), now.Sub(i.Stopped).Round(time.Second))
	}
	switch {
	case b.Newest == nil:
		fmt.Fprintf(w, "  newest: none\n")
	default:
		fmt.Fprintf(w, "  newest: %s\n", describe(b.Newest))
		if b.NewestFull != nil && b.NewestFull.Label != b.Newest.Label {
			fmt.Fprintf(w, "  newest full: %s\n", describe(b.NewestFull))
		}
	}
	switch {
	case b.Running != nil:
		fmt.Fprintf(w, "  running: %s on %s since %s\n", b.Running.Kind, b.Running.Node, b.Running.Started.Local().Format(time.TimeOnly))
	case b.Request != nil:
		fmt.Fprintf(w, "  requested: %s at %s, not started yet\n", b.Request.Kind, b.Request.Requested.Local().Format(time.TimeOnly))
	case !b.Next.IsZero():
		fmt.Fprintf(w, "  next scheduled: in %s (%s)\n", b.Next.Sub(now).Round(time.Second), b.Next.Local().Format(time.DateTime))
	case b.Newest != nil:
		fmt.Fprintf(w, "  next scheduled: none (no database.backup.base_every)\n")
	}
	if t := b.RestoreTest; t != nil {
		if t.OK {
			fmt.Fprintf(w, "  restore test: passed, %s restored and recovered to %s on %s in %.1fs, %s ago\n", t.Label, t.RecoveredLSN, t.Node, t.Seconds, now.Sub(t.At).Round(time.Second))
		} else {
			fmt.Fprintf(w, "  restore test FAILED: %s on %s, %s ago: %s\n", orDash(t.Label), t.Node, now.Sub(t.At).Round(time.Second), t.Error)
		}
	}
	if l := b.Last; l != nil && l.Error != "" {
		fmt.Fprintf(w, "  last attempt FAILED: %s on %s at %s: %s\n", l.Kind, l.Node, l.Finished.Local().Format(time.DateTime), l.Error)
	}
	if arch != nil {
		state := "archiving"
		if !arch.Archiving {
			state = "not archiving now"
		}
		fmt.Fprintf(w, "  WAL archive: timeline %d, up to %s (%s, %s), lag %s, %.1fs\n", arch.Timeline, arch.Position, arch.Node, state, size(int64(arch.LagBytes)), arch.LagSeconds)
	} else {
		fmt.Fprintf(w, "  WAL archive: no node reports archiving\n")
	}
	for _, a := range as {
		if a.err == nil && a.val != nil && a.val.Backup != nil && a.val.Backup.Error != "" {
			fmt.Fprintf(w, "  %s: %s\n", a.node, a.val.Backup.Error)
		}
	}
}
