package expire

import (
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/backup/base"
)

var now = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

// backups makes manifests from "LABEL:AGE[:PRIOR[:REF]]" specs, oldest
// first: a label ending in F is a full backup, in I an incremental on
// PRIOR whose one file is held by REF (itself when empty); AGE is how
// long before now it stopped.
func backups(t *testing.T, specs ...string) []*base.Manifest {
	t.Helper()
	var ms []*base.Manifest
	for _, s := range specs {
		f := strings.Split(s, ":")
		age, err := time.ParseDuration(f[1])
		if err != nil {
			t.Fatal(err)
		}
		m := &base.Manifest{Label: f[0], Kind: "full", StopTime: now.Add(-age)}
		if strings.HasSuffix(f[0], "I") {
			m.Kind, m.Prior = "incremental", f[2]
			ref := f[2]
			if len(f) > 3 {
				ref = f[3]
			}
			m.Files = []base.File{{Path: "base/5/1", Ref: ref}}
		}
		ms = append(ms, m)
	}
	return ms
}

func labels(ms []*base.Manifest) string {
	var l []string
	for _, m := range ms {
		l = append(l, m.Label)
	}
	return strings.Join(l, " ")
}

func TestDecide(t *testing.T) {
	for _, c := range []struct {
		name   string
		ms     []string
		p      Policy
		expire string
	}{
		{"count only: the oldest group goes whole",
			[]string{"1F:72h", "2I:70h:1F", "3I:68h:2I:1F", "4F:48h", "5I:40h:4F", "6F:24h"},
			Policy{RetainCount: 2}, "1F 2I 3I"},
		{"count keeps them all",
			[]string{"1F:72h", "2F:48h"}, Policy{RetainCount: 2}, ""},
		{"retain: a full older than retain stays while the next one is younger than retain",
			[]string{"1F:240h", "2F:192h", "3F:24h"}, Policy{Retain: 168 * time.Hour, RetainCount: 1}, "1F"},
		{"retain: the next full is itself older than retain",
			[]string{"1F:240h", "2F:200h", "3F:170h", "4F:1h"}, Policy{Retain: 168 * time.Hour, RetainCount: 1}, "1F 2F"},
		{"retain covers everything",
			[]string{"1F:48h", "2F:24h"}, Policy{Retain: 168 * time.Hour, RetainCount: 1}, ""},
		{"retain_count wins over an old age",
			[]string{"1F:2400h", "2F:2000h"}, Policy{Retain: time.Hour, RetainCount: 2}, ""},
		{"an incremental kept keeps the expiring backup that holds one of its files",
			[]string{"1F:72h", "2I:70h:1F", "3F:48h", "4I:40h:3F:1F"}, Policy{RetainCount: 1}, "2I"},
		{"an incremental belongs to its prior's group, whatever came between",
			[]string{"1F:72h", "2I:70h:1F", "3F:48h", "4I:40h:2I"}, Policy{RetainCount: 1}, "1F 2I 4I"},
		{"a kept backup keeps what it refers to, and what that refers to",
			[]string{"1F:72h", "2I:70h:1F", "3F:48h", "4I:40h:3F:2I"}, Policy{RetainCount: 1}, ""},
		{"no backups", nil, Policy{RetainCount: 1}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			ms := backups(t, c.ms...)
			keep, expire := decide(ms, c.p, now)
			if got := labels(expire); got != c.expire {
				t.Errorf("expired %q, want %q (kept %q)", got, c.expire, labels(keep))
			}
			if len(keep)+len(expire) != len(ms) {
				t.Errorf("kept %d and expired %d of %d", len(keep), len(expire), len(ms))
			}
		})
	}
}

func TestSegmentOf(t *testing.T) {
	for name, want := range map[string]int64{
		"000000010000000000000003":                  3,
		"000000020000000100000002":                  0x102,
		"000000010000000000000003.00A2C000.partial": 3,
		"00000002.history":                          -1,
		"000000010000000000000003.00a2c000.partial": -1,
		"000000010000000000000003.partial":          -1,
		"000000010000000000000003.0001.partial":     -1,
		"notwal":                                    -1,
	} {
		no, ok := segmentOf(name)
		if (want < 0) == ok || (ok && int64(no) != want) {
			t.Errorf("segmentOf(%q) = %d, %v; want %d", name, no, ok, want)
		}
	}
}
