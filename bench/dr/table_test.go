package main

import (
	"testing"

	"github.com/haven-ha/haven/internal/pg/pgtest"
)

// TestMakeTableSQLTwice runs haven's start-up statements twice on a real
// PostgreSQL, as the bench does when the first primary stopped after it
// had committed them: the second run must succeed and leave a table the
// writer's role can write.
func TestMakeTableSQLTwice(t *testing.T) {
	s := pgtest.Start(t, "table", nil)
	pgtest.Exec(t, s, makeTableSQL)
	pgtest.Exec(t, s, makeTableSQL)
	pgtest.Exec(t, s, "SET ROLE "+appUser+"; INSERT INTO writes (run, seq) VALUES (1, 1)")
	if got := pgtest.Query(t, s, "SELECT count(*)::text FROM writes"); got != "1" {
		t.Errorf("rows in writes = %s, want 1", got)
	}
}
