package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// WrapDir makes a program directory for a test that wants one program to
// misbehave, and returns it: symbolic links to every program in dir but
// name, which is script(marks) (it finds the real one in dir). marks is
// a directory any user may write in, for a script that runs as another
// user (PostgreSQL's programs run as postgres) to leave marks of what it
// did.
func WrapDir(t testing.TB, dir, name string, script func(marks string) string) string {
	t.Helper()
	bindir := SearchableDir(t)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != name {
			if err := os.Symlink(filepath.Join(dir, e.Name()), filepath.Join(bindir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	marks := filepath.Join(bindir, "marks")
	if err := os.Mkdir(marks, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(marks, 0o777); err != nil { // past the umask
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bindir, name), []byte(script(marks)), 0o755); err != nil {
		t.Fatal(err)
	}
	return bindir
}
