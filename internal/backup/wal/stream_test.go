package wal

import (
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/haven-ha/haven/internal/backup/repo"
)

// A whole segment already stored that stays pending (no byte of the next
// has come, as after a WAL switch on an idle server) is not stored again:
// neither at the next flush nor by a graceful stop's finish, which would
// otherwise spend its whole timeout storing it over and over.
func TestStoredWholeSegmentNotStoredAgain(t *testing.T) {
	r, err := repo.OpenFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgconn.ParseConfig("host=127.0.0.1") // never used: nothing connects
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Conn: conn, Repo: r, Cluster: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	seg := &segment{tli: 1, no: 3, data: make([]byte, SegmentSize), durable: SegmentSize}
	s := &streamer{a: a, log: a.log, pending: []*segment{seg}, uploads: make(chan uploadResult, 1)}
	s.startUpload(true)
	if s.ops != nil {
		t.Fatalf("a stored whole segment is stored again: %d ops", len(s.ops))
	}
	seg.durable = 0
	s.startUpload(false)
	if len(s.ops) != 1 || s.ops[0].seg != seg || len(s.ops[0].data) != SegmentSize {
		t.Fatalf("a whole segment not stored yet is not stored: %+v", s.ops)
	}
	s.applied(<-s.uploads)
	if seg.durable != SegmentSize {
		t.Fatalf("after the upload %d bytes are durable", seg.durable)
	}
}
