package pg

import (
	"fmt"
	"slices"
	"testing"
)

// A failed initdb, pg_basebackup or pg_rewind is reported with the end of
// its output: the part that says why.
func TestLastLines(t *testing.T) {
	for _, tc := range []struct {
		out  string
		n    int
		want []string
	}{
		{"", 3, nil},
		{"\n\n", 3, nil},
		{"one\n", 3, []string{"one"}},
		{"a\nb\nc\nd\n", 2, []string{"c", "d"}},
		{"a\n\nb", 5, []string{"a", "", "b"}},
	} {
		if got := lastLines(tc.out, tc.n); !slices.Equal(got, tc.want) {
			t.Errorf("lastLines(%q, %d) = %q, want %q", tc.out, tc.n, got, tc.want)
		}
	}
}

// The server keeps postgres's last log lines, oldest first, once the ring
// has wrapped.
func TestLineTailKeepsTheLastLines(t *testing.T) {
	var lt lineTail
	for i := range tailLines + 5 {
		lt.add(fmt.Sprint(i))
	}
	got := lt.last(3)
	if want := []string{fmt.Sprint(tailLines + 2), fmt.Sprint(tailLines + 3), fmt.Sprint(tailLines + 4)}; !slices.Equal(got, want) {
		t.Errorf("last(3) = %q, want %q", got, want)
	}
	if all := lt.last(tailLines * 2); len(all) != tailLines || all[0] != "5" {
		t.Errorf("last(%d) has %d lines starting %q, want %d starting \"5\"", tailLines*2, len(all), all[0], tailLines)
	}
}
