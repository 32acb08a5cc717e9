package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ownerFile, in each run's temporary directory, holds the harness's pid.
const ownerFile = "owner.pid"

// Dirs are the directories of one run of a harness.
type Dirs struct {
	Root string // the repository
	Here string // the harness's own directory, Root/bench/NAME
	Work string // the temporary directory: configurations, logs, binaries
	Raw  string // raw output of this run, under Here/results/raw (ignored by git)
}

// NewDirs prepares the directories of a run of the harness bench/name:
// Root, found from the working directory upwards; Work,
// os.TempDir()/haven-bench-NAME-<random>, which holds the harness's pid so
// that a later run can tell whether its owner is alive; and Raw,
// Here/results/raw/YYYYMMDD-HHMMSS (UTC).
//
// First it removes the temporary directories of earlier runs that were
// killed, and logs so; with killLeftovers it also kills the processes still
// running in them, for a harness whose children can outlive it (nginx
// workers survive their master). On error it leaves nothing behind.
// RemoveWorkDir removes Work at the end of the run.
func NewDirs(name string, killLeftovers bool) (Dirs, error) {
	var d Dirs
	var err error
	if d.Root, err = repoRoot(); err != nil {
		return Dirs{}, err
	}
	d.Here = filepath.Join(d.Root, "bench", name)
	prefix := "haven-bench-" + name + "-"
	for _, n := range reapStale(os.TempDir(), prefix, killLeftovers) {
		Logf("previous run: %s", n)
	}
	if d.Work, err = makeWorkDir(os.TempDir(), prefix); err != nil {
		return Dirs{}, err
	}
	if d.Raw, err = newRawDir(d.Here); err != nil {
		os.RemoveAll(d.Work)
		return Dirs{}, err
	}
	return d, nil
}

// makeWorkDir makes a temporary directory parent/PREFIX<random> that holds
// this process's pid. reapStale, which takes a directory holding this
// process's own pid for one of an earlier process, must come first.
func makeWorkDir(parent, prefix string) (string, error) {
	dir, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// RemoveWorkDir removes dir, or, with keep, leaves it and says where it is.
func RemoveWorkDir(dir string, keep bool) {
	if keep {
		Logf("kept %s", dir)
		return
	}
	UnmountUnder(dir)
	os.RemoveAll(dir)
}

// UnmountUnder detaches every file system mounted at or below dir (a
// bench's tmpfs, say), deepest first, so that removing dir removes it all
// and leaves no mount behind.
func UnmountUnder(dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		if err := syscall.Unmount(points[i], syscall.MNT_DETACH); err != nil {
			Logf("warning: unmount %s: %v", points[i], err)
		}
	}
}

// reapStale removes the temporary directories parent/PREFIX* that earlier
// runs left behind when they were killed with SIGKILL: those whose owner
// pid is not a live process. With killLeftovers it first kills, by pid,
// every process whose working directory is one of them. It returns what it
// did, one note per action.
func reapStale(parent, prefix string, killLeftovers bool) []string {
	dirs, _ := filepath.Glob(filepath.Join(parent, prefix+"*"))
	var stale []string
	for _, d := range dirs {
		data, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue // not ours, or still being set up
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err == nil && pid != os.Getpid() && syscall.Kill(pid, 0) == nil {
			continue // its harness is alive
		}
		stale = append(stale, d)
	}
	var notes []string
	if killLeftovers && len(stale) > 0 {
		notes = killIn(stale)
	}
	for _, d := range stale {
		UnmountUnder(d)
		os.RemoveAll(d)
		notes = append(notes, "removed "+d)
	}
	return notes
}

// killIn kills every process whose working directory is one of dirs.
func killIn(dirs []string) []string {
	in := map[string]bool{}
	for _, d := range dirs {
		in[d] = true
	}
	var notes []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd")
		if err != nil || !in[cwd] {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			notes = append(notes, fmt.Sprintf("killed pid %d left over in %s", pid, cwd))
		}
	}
	return notes
}

// module is the module line of haven's go.mod.
const module = "module github.com/haven-ha/haven"

// repoRoot finds the directory of the haven module's go.mod from the
// working directory upwards.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	return repoRootFrom(dir)
}

func repoRootFrom(dir string) (string, error) {
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(data), module) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the haven repository (no go.mod of github.com/haven-ha/haven found upwards)")
		}
		dir = parent
	}
}

// newRawDir makes the directory for the raw output of a run,
// here/results/raw/YYYYMMDD-HHMMSS (UTC), and returns its path.
func newRawDir(here string) (string, error) {
	dir := filepath.Join(here, "results", "raw", time.Now().UTC().Format("20060102-150405"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return dir, nil
}
