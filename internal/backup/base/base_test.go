package base

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestSkip(t *testing.T) {
	for _, c := range []struct {
		rel  string
		dir  bool
		want bool
	}{
		{"postmaster.pid", false, true},
		{"postmaster.opts", false, true},
		{"backup_label", false, true},
		{"standby.signal", false, true},
		{"pg_wal", true, false},
		{"pg_wal/000000010000000000000003", false, true},
		{"pg_wal/archive_status", true, false},
		{"pg_replslot/haven_archive", true, true},
		{"pg_stat_tmp/global.stat", false, true},
		{"base/5/pgsql_tmp", true, true},
		{"base/pgsql_tmp/pgsql_tmp123.0", false, true},
		{"global/pg_internal.init", false, true},
		{"base/5/16384", false, false},
		{"global/pg_control", false, false},
		{"postgresql.auto.conf", false, false},
		{"base/5/backup_label", false, false},
	} {
		if got := skip(c.rel, c.dir); got != c.want {
			t.Errorf("skip(%q, dir %v) = %v, want %v", c.rel, c.dir, got, c.want)
		}
	}
	got := unloggedForks([]string{"16384", "16384_fsm", "16390", "16390_init", "16390_fsm", "16390.1", "PG_VERSION"})
	if len(got) != 3 || !got["16390"] || !got["16390_fsm"] || !got["16390.1"] {
		t.Errorf("unloggedForks: %v, want 16390, 16390_fsm, 16390.1", got)
	}
}

func TestCompressionRoundTrip(t *testing.T) {
	page := []byte("haven base backup page 0123456789 ")
	for _, c := range []Compression{None, LZ4, Zstd} {
		e, err := newEncoder(c)
		if err != nil {
			t.Fatal(err)
		}
		d, err := newDecoder(c)
		if err != nil {
			t.Fatal(err)
		}
		// Sizes around lz4's block sizes, and a stream of unknown size; the
		// encoder and decoder are reused from one file to the next.
		for _, n := range []int{0, 8 << 10, 64 << 10, 64<<10 + 1, 1 << 20, 3 << 20, -1} {
			size := n
			if n < 0 {
				size = 5 << 20
			}
			data := bytes.Repeat(page, size/len(page)+1)[:size]
			var buf bytes.Buffer
			w := e.wrap(&buf, int64(n))
			if _, err := w.Write(data); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			stored := buf.Len()
			if c == LZ4 && n == 8<<10 && buf.Bytes()[5]>>4 != 4 {
				t.Errorf("lz4: an 8 KiB file declares block size index %d; want 4 (64 KiB), so that its reader takes a small buffer", buf.Bytes()[5]>>4)
			}
			r, err := d.wrap(&buf)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s, %d bytes: round trip gave %d bytes, %v", c, n, len(got), err)
			}
			if c != None && size > 4096 && stored*10 > len(data) {
				t.Errorf("%s: %d bytes stored for %d repetitive ones", c, stored, len(data))
			}
		}
		d.close()
	}
	if _, err := ParseCompression("gzip"); err == nil || !strings.Contains(err.Error(), "none, lz4, zstd") {
		t.Errorf("ParseCompression(gzip): %v", err)
	}
}

func TestTargetSettings(t *testing.T) {
	s, err := Target{Name: "before-drop"}.settings()
	if err != nil || len(s) != 3 || s[0] != [2]string{"recovery_target_name", "before-drop"} || s[2] != [2]string{"recovery_target_action", "promote"} {
		t.Errorf("name target: %v, %v", s, err)
	}
	if s, err := (Target{}).settings(); err != nil || len(s) != 0 {
		t.Errorf("latest: %v, %v; want no settings", s, err)
	}
	if _, err := (Target{Name: "a", XID: "7"}).settings(); err == nil {
		t.Error("two targets accepted")
	}
}
