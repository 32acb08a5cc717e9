package pg

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		out     string
		version string
		major   int
		err     bool
	}{
		{out: "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", version: "15.18", major: 15},
		{out: "postgres (PostgreSQL) 16.4\n", version: "16.4", major: 16},
		{out: "postgres (PostgreSQL) 17devel\n", version: "17devel", major: 17},
		{out: "postgres (PostgreSQL) 18beta2\n", version: "18beta2", major: 18},
		{out: "postgres (PostgreSQL) 9.6.24\n", version: "9.6.24", major: 9},
		{out: "postmaster (PostgreSQL) 14.9\n", version: "14.9", major: 14},
		{out: "bash: postgres: command not found\n", err: true},
		{out: "", err: true},
		{out: "postgres (PostgreSQL) 99999999999999999999999\n", err: true},
	} {
		version, major, err := parseVersion(tc.out)
		if tc.err {
			if err == nil {
				t.Errorf("parseVersion(%q) = %q, %d; want an error", tc.out, version, major)
			}
			continue
		}
		if err != nil || version != tc.version || major != tc.major {
			t.Errorf("parseVersion(%q) = %q, %d, %v; want %q, %d", tc.out, version, major, err, tc.version, tc.major)
		}
	}
}

func FuzzParseVersion(f *testing.F) {
	f.Add("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n")
	f.Add("postgres (PostgreSQL) 17devel")
	f.Add("(PostgreSQL) ")
	f.Fuzz(func(t *testing.T, out string) {
		version, major, err := parseVersion(out)
		if err != nil {
			return
		}
		if major < 0 || !strings.Contains(out, version) {
			t.Fatalf("parseVersion(%q) = %q, %d", out, version, major)
		}
	})
}

// fakeBindir makes a binary directory whose programs are shell scripts;
// postgres prints version. Programs in skip are left out.
func fakeBindir(t *testing.T, version string, skip ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range requiredBinaries {
		if strings.Contains(" "+strings.Join(skip, " ")+" ", " "+name+" ") {
			continue
		}
		script := "#!/bin/sh\nexit 0\n"
		if name == "postgres" {
			script = "#!/bin/sh\necho 'postgres (PostgreSQL) " + version + "'\n"
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestFindBinariesConfigured(t *testing.T) {
	ctx := context.Background()

	dir := fakeBindir(t, "15.7")
	b, err := FindBinaries(ctx, dir)
	if err != nil {
		t.Fatalf("FindBinaries: %v", err)
	}
	if b.Major != 15 || b.Version != "15.7" || b.Path("pg_rewind") != filepath.Join(b.Dir, "pg_rewind") {
		t.Errorf("FindBinaries = %+v", b)
	}

	old := fakeBindir(t, "14.9")
	_, err = FindBinaries(ctx, old)
	for _, want := range []string{"14.9", filepath.Join(old, "postgres"), "needs 15 or later"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("FindBinaries(PostgreSQL 14) = %v; want an error with %q", err, want)
		}
	}

	missing := fakeBindir(t, "15.7", "pg_rewind", "initdb")
	_, err = FindBinaries(ctx, missing)
	if err == nil || !strings.Contains(err.Error(), "missing initdb, pg_rewind") || !strings.Contains(err.Error(), missing) {
		t.Errorf("FindBinaries(no initdb, pg_rewind) = %v; want both named, and the directory", err)
	}
}

func TestFindBinariesPath(t *testing.T) {
	ctx := context.Background()
	// postgres on PATH is a symbolic link into the real directory, as
	// Debian's /usr/local/bin links are: the real directory is used.
	real := fakeBindir(t, "16.2")
	onPath := t.TempDir()
	if err := os.Symlink(filepath.Join(real, "postgres"), filepath.Join(onPath, "postgres")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", onPath)
	b, err := FindBinaries(ctx, "")
	if err != nil {
		t.Fatalf("FindBinaries: %v", err)
	}
	if want, _ := filepath.EvalSymlinks(real); b.Dir != want || b.Major != 16 {
		t.Errorf("FindBinaries = %+v; want dir %s, major 16", b, want)
	}

	t.Setenv("PATH", t.TempDir())
	_, err = FindBinaries(ctx, "")
	if err == nil || !strings.Contains(err.Error(), "no postgres in") || !strings.Contains(err.Error(), "pg_config") {
		t.Errorf("FindBinaries with nothing on PATH = %v; want what was searched", err)
	}
}
