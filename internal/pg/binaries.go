package pg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// MinMajorVersion is the oldest PostgreSQL major version haven runs.
const MinMajorVersion = 15

// requiredBinaries are the programs haven runs from the PostgreSQL binary
// directory: the server, initdb for a new cluster, pg_controldata to read a
// stopped data directory, and pg_basebackup and pg_rewind for the keeper's
// clone and rejoin.
var requiredBinaries = []string{"postgres", "initdb", "pg_controldata", "pg_basebackup", "pg_rewind"}

// versionTimeout bounds `postgres --version`.
const versionTimeout = 10 * time.Second

// Binaries is a PostgreSQL binary directory, of version MinMajorVersion or
// later, that holds postgres, initdb, pg_controldata, pg_basebackup and
// pg_rewind.
type Binaries struct {
	// Dir is the directory, with symbolic links resolved.
	Dir string
	// Version is the version `postgres --version` printed, such as "15.18".
	Version string
	// Major is the major version, such as 15.
	Major int
}

// Path returns the path of the program name in the binary directory.
func (b *Binaries) Path(name string) string { return filepath.Join(b.Dir, name) }

// FindBinaries finds the PostgreSQL binaries. With a non-empty bindir it
// looks there only. Otherwise it tries, in order, the directory of the
// `postgres` found on PATH (after resolving symbolic links, so that
// /usr/local/bin/postgres -> /usr/lib/postgresql/15/bin/postgres leads to
// the directory that also holds pg_rewind) and the directory that
// `pg_config --bindir` prints. All programs come from one directory: mixing
// versions, or Debian's pg_wrapper, would be worse than failing.
//
// The error says what was searched, which programs are missing by name, and
// which version was found where when it is older than MinMajorVersion.
func FindBinaries(ctx context.Context, bindir string) (*Binaries, error) {
	if bindir != "" {
		b, err := checkBindir(ctx, bindir)
		if err != nil {
			return nil, fmt.Errorf("pg: bindir %s: %w", bindir, err)
		}
		return b, nil
	}
	var tried []string
	if p, err := exec.LookPath("postgres"); err == nil {
		dir := filepath.Dir(p)
		if real, err := filepath.EvalSymlinks(p); err == nil {
			dir = filepath.Dir(real)
		}
		b, err := checkBindir(ctx, dir)
		if err == nil {
			return b, nil
		}
		tried = append(tried, fmt.Sprintf("PATH: %s in %s: %v", p, dir, err))
	} else {
		tried = append(tried, "PATH: no postgres in "+os.Getenv("PATH"))
	}
	if p, err := exec.LookPath("pg_config"); err == nil {
		cctx, cancel := context.WithTimeout(ctx, versionTimeout)
		out, err := exec.CommandContext(cctx, p, "--bindir").Output()
		cancel()
		dir := strings.TrimSpace(string(out))
		switch {
		case err != nil:
			tried = append(tried, fmt.Sprintf("%s --bindir: %v", p, err))
		case dir == "":
			tried = append(tried, fmt.Sprintf("%s --bindir: printed nothing", p))
		default:
			b, err := checkBindir(ctx, dir)
			if err == nil {
				return b, nil
			}
			tried = append(tried, fmt.Sprintf("%s --bindir: %s: %v", p, dir, err))
		}
	} else {
		tried = append(tried, "pg_config: not on PATH")
	}
	return nil, fmt.Errorf("pg: no PostgreSQL %d+ binaries found (set the binary directory, Config.Bindir, or put pg_config on PATH): %s",
		MinMajorVersion, strings.Join(tried, "; "))
}

// checkBindir checks that dir holds every required program and that its
// postgres is recent enough.
func checkBindir(ctx context.Context, dir string) (*Binaries, error) {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	var missing []string
	for _, name := range requiredBinaries {
		if !isExecutable(filepath.Join(dir, name)) {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	postgres := filepath.Join(dir, "postgres")
	cctx, cancel := context.WithTimeout(ctx, versionTimeout)
	defer cancel()
	out, err := exec.CommandContext(cctx, postgres, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w", postgres, err)
	}
	version, major, err := parseVersion(string(out))
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w", postgres, err)
	}
	if major < MinMajorVersion {
		return nil, fmt.Errorf("%s is PostgreSQL %s; haven needs %d or later", postgres, version, MinMajorVersion)
	}
	return &Binaries{Dir: dir, Version: version, Major: major}, nil
}

// isExecutable reports whether path is a regular file that someone may
// execute.
func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// versionRE matches the output of `postgres --version`:
// "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", "... 17devel",
// "... 16beta2", "... 9.6.24".
var versionRE = regexp.MustCompile(`\(PostgreSQL\) ((\d+)[0-9A-Za-z.]*)`)

// errVersion reports output that is not a PostgreSQL version.
var errVersion = errors.New("not a PostgreSQL version")

// parseVersion returns the version and its major number from the output of
// `postgres --version`. Before PostgreSQL 10 the major version had two
// parts; the first is returned, which is all the comparison with
// MinMajorVersion needs.
func parseVersion(out string) (version string, major int, err error) {
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		return "", 0, fmt.Errorf("%w: %q", errVersion, strings.TrimSpace(out))
	}
	major, err = strconv.Atoi(m[2])
	if err != nil {
		return "", 0, fmt.Errorf("%w: %q", errVersion, strings.TrimSpace(out))
	}
	return m[1], major, nil
}
