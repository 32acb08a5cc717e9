package wal

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/repo/repotest"
	"github.com/haven-ha/haven/internal/pg"
)

func TestSegmentNames(t *testing.T) {
	for _, tc := range []struct {
		tli  uint32
		no   uint64
		name string
	}{
		{1, 0, "000000010000000000000000"},
		{1, 3, "000000010000000000000003"},
		{2, 0x100, "000000020000000100000000"},
		{0x1F, 0x2FF, "0000001F00000002000000FF"},
	} {
		if got := SegmentName(tc.tli, tc.no); got != tc.name {
			t.Errorf("SegmentName(%d, %d) = %s, want %s", tc.tli, tc.no, got, tc.name)
		}
		tli, no, err := ParseSegmentName(tc.name)
		if err != nil || tli != tc.tli || no != tc.no {
			t.Errorf("ParseSegmentName(%s) = %d, %d, %v", tc.name, tli, no, err)
		}
	}
	for _, bad := range []string{"", "00000001000000000000000", "000000010000000000000100", "00000000000000000000000A", "00000001000000000000000g", "000000010000000000000003.partial"} {
		if _, _, err := ParseSegmentName(bad); err == nil {
			t.Errorf("ParseSegmentName(%q) accepted it", bad)
		}
	}
	p := pieceName("000000010000000000000003", 0x1A000)
	if p != "000000010000000000000003.0001A000.partial" {
		t.Errorf("pieceName = %s", p)
	}
	if seg, off, err := parsePieceName(p); err != nil || seg != "000000010000000000000003" || off != 0x1A000 {
		t.Errorf("parsePieceName(%s) = %s, %d, %v", p, seg, off, err)
	}
	if !isHistoryName("00000002.history") || isHistoryName("2.history") {
		t.Error("isHistoryName")
	}
}

func FuzzParsePieceName(f *testing.F) {
	f.Add("000000010000000000000003.0001A000.partial")
	f.Fuzz(func(t *testing.T, name string) {
		seg, off, err := parsePieceName(name)
		if err == nil && pieceName(seg, off) != name {
			t.Errorf("%q parsed as %s, %d", name, seg, off)
		}
	})
}

func put(t *testing.T, r repo.Repository, name string, data []byte) {
	t.Helper()
	if err := r.Put(context.Background(), name, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
}

// TestFetchAndEnd stores segments and pieces as an archiver would and
// reads them back as a restore would, and as the next archiver finds
// where the archive ends, in a repository and in an encrypted one (whose
// objects are longer than what they hold).
func TestFetchAndEnd(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		r, err := repo.OpenFile(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		testFetchAndEnd(t, r)
	})
	t.Run("encrypted", func(t *testing.T) {
		r, err := repotest.OpenEncrypted(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		testFetchAndEnd(t, r)
	})
}

func testFetchAndEnd(t *testing.T, r repo.Repository) {
	ctx := context.Background()
	if end, err := scanEnd(ctx, r, "c"); err != nil || end.ok {
		t.Fatalf("empty archive: %+v, %v", end, err)
	}
	whole := bytes.Repeat([]byte{7}, SegmentSize)
	put(t, r, "c/wal/000000010000000000000003", whole)
	put(t, r, "c/wal/000000010000000000000003.00000000.partial", []byte("left over"))
	put(t, r, "c/wal/000000010000000000000004.00000000.partial", []byte("abc"))
	put(t, r, "c/wal/000000010000000000000004.00000003.partial", []byte("defg"))
	put(t, r, "c/wal/00000002.history", []byte("1\t0/4000007\tno recovery target specified\n"))

	end, err := scanEnd(ctx, r, "c")
	if err != nil {
		t.Fatal(err)
	}
	if !end.ok || end.tli != 1 || end.pos != 4*SegmentSize+7 || len(end.pieces) != 2 || len(end.leftovers) != 1 {
		t.Errorf("end = %+v, want timeline 1 at 0/4000007 with 2 pieces and 1 leftover", end)
	}

	var b bytes.Buffer
	if err := Fetch(ctx, r, "c", "000000010000000000000003", &b); err != nil || !bytes.Equal(b.Bytes(), whole) {
		t.Errorf("whole segment: %d bytes, %v", b.Len(), err)
	}
	b.Reset()
	if err := Fetch(ctx, r, "c", "000000010000000000000004", &b); err != nil {
		t.Fatal(err)
	}
	want := append([]byte("abcdefg"), make([]byte, SegmentSize-7)...)
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("assembled segment: %d bytes starting %q", b.Len(), b.Bytes()[:10])
	}
	b.Reset()
	if err := Fetch(ctx, r, "c", "00000002.history", &b); err != nil || !strings.HasPrefix(b.String(), "1\t0/4000007") {
		t.Errorf("history: %q, %v", b.String(), err)
	}
	for _, missing := range []string{"000000010000000000000005", "00000003.history"} {
		if err := Fetch(ctx, r, "c", missing, &b); !errors.Is(err, repo.ErrNotExist) {
			t.Errorf("Fetch(%s) = %v, want ErrNotExist", missing, err)
		}
	}
	put(t, r, "c/wal/000000010000000000000005.00000010.partial", []byte("x"))
	if err := Fetch(ctx, r, "c", "000000010000000000000005", &b); err == nil || repo.IsNotExist(err) {
		t.Errorf("pieces not from offset 0: %v", err)
	}
	put(t, r, "c/wal/000000010000000000000004.00000009.partial", []byte("x"))
	if err := Fetch(ctx, r, "c", "000000010000000000000004", &b); err == nil || !strings.Contains(err.Error(), "gap") {
		t.Errorf("pieces with a gap: %v", err)
	}
	if err := Fetch(ctx, r, "c", "../../etc/passwd", &b); err == nil {
		t.Error("Fetch took a name that is not a WAL file's")
	}
}

func TestSuccessor(t *testing.T) {
	h := []byte("1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tno recovery target specified\n")
	for _, tc := range []struct {
		tli, next uint32
		at        pg.LSN
	}{{1, 2, 0x3000158}, {2, 3, 0x5000000}} {
		next, at, err := successor(h, tc.tli, 3)
		if err != nil || next != tc.next || at != tc.at {
			t.Errorf("successor(%d) = %d, %v, %v", tc.tli, next, at, err)
		}
	}
	if _, _, err := successor(h, 4, 3); err == nil {
		t.Error("successor of a timeline not in the history")
	}
}

// TestHoldsAcrossAFork: a base backup's WAL that its timeline's archive
// lacks (the primary failed over before its last segment was archived)
// is held when a later timeline, forked after that WAL, has the segment:
// its history says so. A fork before the needed WAL, or no history, is
// not enough.
func TestHoldsAcrossAFork(t *testing.T) {
	ctx := context.Background()
	r, err := repo.OpenFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	from, to := pg.LSN(3*SegmentSize+0xD8), pg.LSN(4*SegmentSize+0x2A250)
	const hist = "\tno recovery target specified\n"
	for _, tc := range []struct {
		name  string
		later map[string]string // objects besides timeline 1's, with a history's text
		held  bool
	}{
		{"timeline 1 alone", nil, false},
		{"timeline 2's segment without its history", map[string]string{"000000020000000000000004": ""}, false},
		{"timeline 2 forked before the stop", map[string]string{"000000020000000000000004": "", "00000002.history": "1\t0/402A000" + hist}, false},
		{"timeline 2 forked after the stop", map[string]string{"000000020000000000000004": "", "00000002.history": "1\t0/4030000" + hist}, true},
		{"timeline 3, forked from 2, which forked from 1 after the stop", map[string]string{
			"00000002.history": "1\t0/4030000" + hist, "000000030000000000000004": "", "00000003.history": "1\t0/4030000" + hist + "2\t0/4040000" + hist}, true},
	} {
		c := strings.ReplaceAll(tc.name, " ", "-")
		put(t, r, c+"/wal/000000010000000000000003", bytes.Repeat([]byte{1}, SegmentSize))
		put(t, r, c+"/wal/000000010000000000000004.00000000.partial", make([]byte, 0x10000))
		for name, text := range tc.later {
			if text == "" {
				put(t, r, c+"/wal/"+name+".00000000.partial", make([]byte, 0x40000))
			} else {
				put(t, r, c+"/wal/"+name, []byte(text))
			}
		}
		err := Holds(ctx, r, c, 1, from, to)
		switch {
		case tc.held && err != nil:
			t.Errorf("%s: %v; want the WAL held", tc.name, err)
		case !tc.held && (!errors.Is(err, repo.ErrNotExist) || !strings.Contains(err.Error(), "000000010000000000000004 only to offset 65536 of 172624")):
			t.Errorf("%s: %v; want segment 4 of timeline 1 named short", tc.name, err)
		}
		if tc.held {
			if err := Holds(ctx, r, c, 1, from, 4*SegmentSize+0x31000); !errors.Is(err, repo.ErrNotExist) {
				t.Errorf("%s, WAL past the fork: %v; want it not held", tc.name, err)
			}
		}
	}
}
