package pg

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// ErrInitialized is returned by Init when the data directory already holds
// a PostgreSQL cluster.
var ErrInitialized = errors.New("already initialised")

// ErrNotInitialized is returned by Start when the data directory holds no
// PostgreSQL cluster.
var ErrNotInitialized = errors.New("not initialised")

// ErrAlreadyRunning is returned by Start when a postmaster already runs on
// the data directory.
var ErrAlreadyRunning = errors.New("already running")

// dataDirVersion returns the major version in PG_VERSION, or 0 when the
// file does not exist.
func dataDirVersion(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "PG_VERSION"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("PG_VERSION: %q is not a major version", strings.TrimSpace(string(b)))
	}
	return v, nil
}

// HasData reports whether the data directory holds a database cluster
// (its PG_VERSION names a major version).
func (s *Server) HasData() bool {
	v, err := dataDirVersion(s.cfg.dataDir)
	return err == nil && v > 0
}

// emptyDataDir removes what is in the data directory, keeping the
// directory itself (its owner and mode are prepareDataDir's).
func (s *settings) emptyDataDir() error {
	entries, err := os.ReadDir(s.dataDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		errs = append(errs, os.RemoveAll(filepath.Join(s.dataDir, e.Name())))
	}
	return errors.Join(errs...)
}

// prepareDataDir creates the data directory for initdb, or checks that an
// existing one is empty, and gives it to the run-as user with mode 0700.
func (s *settings) prepareDataDir() error {
	dir := s.dataDir
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := s.checkReachable(dir); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return errors.New("exists and is not a directory")
		}
		v, err := dataDirVersion(dir)
		if err != nil {
			return err
		}
		if v != 0 {
			return fmt.Errorf("%w (PostgreSQL %d)", ErrInitialized, v)
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		if len(entries) > 0 {
			var names []string
			for _, e := range entries {
				names = append(names, strconv.Quote(e.Name()))
			}
			more := ""
			if len(names) > 5 {
				more = fmt.Sprintf(" and %d more", len(names)-5)
				names = names[:5]
			}
			return fmt.Errorf("not empty and not a PostgreSQL data directory (no PG_VERSION; it holds %s%s): empty it or choose another",
				strings.Join(names, ", "), more)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	if s.user.drop {
		return os.Chown(dir, int(s.user.uid), int(s.user.gid))
	}
	return nil
}

// CheckDirectories checks, before anything starts, what would stop the
// user postgres runs as from reaching its directories: every existing
// directory above the data directory and the socket directory must let it
// search (x). haven creates missing ones with modes that do. It is nil
// when haven is not root: postgres then runs as haven's own user. A
// directory that blocks the user is named, with the chmod that fixes it.
func CheckDirectories(cfg Config) error {
	s, err := resolve(cfg)
	if err != nil {
		return err
	}
	if err := s.checkReachable(s.dataDir); err != nil {
		return fmt.Errorf("pg: data dir %s: %w", s.dataDir, err)
	}
	if err := s.checkReachable(s.socketDir); err != nil {
		return fmt.Errorf("pg: socket dir %s: %w", s.socketDir, err)
	}
	return nil
}

// checkReachable checks that the run-as user may search every existing
// directory above dir: a data directory under a root-only directory (such
// as the 0700 directories of os.MkdirTemp) makes initdb and postgres fail
// with a less helpful message. A directory that does not exist yet is
// haven's to create.
func (s *settings) checkReachable(dir string) error {
	if !s.user.drop {
		return nil
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		if err := s.searchable(d); err != nil {
			return err
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// searchable checks that the run-as user may search directory d, when it
// exists.
func (s *settings) searchable(d string) error {
	fi, err := os.Stat(d)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	bit, who, whom := fs.FileMode(0o001), "o", "others"
	switch {
	case st.Uid == s.user.uid:
		bit, who, whom = 0o100, "u", "its owner"
	case st.Gid == s.user.gid || slices.Contains(s.user.groups, st.Gid):
		bit, who, whom = 0o010, "g", "its group"
	}
	if fi.Mode().Perm()&bit == 0 {
		return fmt.Errorf("user %s (uid %d) cannot reach it: %s is mode %04o owned by uid %d gid %d; allow %s to search it: chmod %s+x %s",
			s.user.name, s.user.uid, d, fi.Mode().Perm(), st.Uid, st.Gid, whom, who, d)
	}
	return nil
}

// prepareSocketDir creates the socket directory, for the run-as user, when
// it does not exist. An existing one is left as it is.
func (s *settings) prepareSocketDir() error {
	if _, err := os.Stat(s.socketDir); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(s.socketDir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(s.socketDir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if s.user.drop {
		return os.Chown(s.socketDir, int(s.user.uid), int(s.user.gid))
	}
	return nil
}

// lockState is what postmaster.pid says about the data directory.
type lockState struct {
	pid   int    // the pid it names; 0 when there is no file
	stale bool   // no postmaster runs as that pid
	other string // the pid belongs to a process that is not postgres (its name)
}

// readLock reads postmaster.pid and checks the process it names. A file
// that cannot be parsed is left to postgres, which explains it.
func readLock(dataDir string) (lockState, error) {
	f, err := os.Open(filepath.Join(dataDir, "postmaster.pid"))
	if errors.Is(err, fs.ErrNotExist) {
		return lockState{}, nil
	}
	if err != nil {
		return lockState{}, err
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return lockState{}, nil
	}
	st := lockState{pid: pid}
	if pid == os.Getpid() {
		// Left by a postmaster of an earlier boot; postgres ignores its
		// parent's pid too.
		st.stale = true
		return st, nil
	}
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		st.stale = true
		return st, nil
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return st, nil // alive, cannot tell more: let postgres decide
	}
	name := strings.TrimSpace(string(comm))
	if name != "postgres" && name != "postmaster" {
		st.other = name
		return st, nil
	}
	// A postgres, but is it on this data directory? A postmaster's working
	// directory is its data directory.
	cwd, err1 := os.Stat(fmt.Sprintf("/proc/%d/cwd", pid))
	dd, err2 := os.Stat(dataDir)
	if err1 == nil && err2 == nil && !os.SameFile(cwd, dd) {
		st.stale = true
	}
	return st, nil
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			kids = append(kids, child)
		}
	}
	return kids
}
