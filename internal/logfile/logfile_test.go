package logfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLinesReachTheFile: lines are buffered, reach the file within the
// flush period without a Close, all of them at Close; a line written
// after Close is dropped, not written to a closed file; Close twice is
// fine; a file that cannot be opened says why.
func TestLinesReachTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.log")
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("one\n"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if string(b) == "one\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the line did not reach the file within 5s: %q", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.Write([]byte("two\n"))
	f.Close()
	f.Write([]byte("late\n"))
	f.Close()
	if b, _ := os.ReadFile(path); string(b) != "one\ntwo\n" {
		t.Errorf("file %q, want one and two", b)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing", "x.log")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("a file in a missing directory: %v", err)
	}
	var none *File
	none.Close()
}
