package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Version is linked into the binaries that Haven builds: what `haven
// version` prints and the status API reports.
const Version = "v0.0.0-test"

// built is what Haven and HavenRace built, in a directory that Main removes.
var built struct {
	mu      sync.Mutex
	main    bool   // Main runs the tests
	dir     string // made by the first build
	binary  build
	raceBin build
}

type build struct {
	once sync.Once
	path string
	err  error
}

// Main runs the tests and exits with their status, after removing the
// binaries that Haven built. A package whose tests call Haven or HavenRace
// calls it from its TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
func Main(m *testing.M) {
	built.mu.Lock()
	built.main = true
	built.mu.Unlock()
	code := m.Run()
	built.mu.Lock()
	if built.dir != "" {
		if err := os.RemoveAll(built.dir); err != nil {
			fmt.Fprintln(os.Stderr, "testenv:", err)
		}
	}
	built.mu.Unlock()
	os.Exit(code)
}

// Haven returns the path of the haven binary built from this tree, as it
// ships (without the race detector), with Version linked in. The first call
// in a test binary builds it; later calls, from any test, return the same
// file. It fails the test when the build fails, or when TestMain does not
// call Main, which removes the binary at the end.
func Haven(t testing.TB) string {
	t.Helper()
	return haven(t, &built.binary, false)
}

// HavenRace is Haven built with the race detector when the test binary
// runs with it, so that the tests that drive the binary find its races
// too. Without -race it returns what Haven does. It is slower and heavier
// than Haven: tests that measure timing under load want Haven.
func HavenRace(t testing.TB) string {
	t.Helper()
	if !raceEnabled {
		return Haven(t)
	}
	return haven(t, &built.raceBin, true)
}

func haven(t testing.TB, b *build, race bool) string {
	t.Helper()
	built.mu.Lock()
	main := built.main
	built.mu.Unlock()
	if !main {
		t.Fatal("testenv: Haven needs the package's TestMain to call testenv.Main, which removes the binary")
	}
	b.once.Do(func() { b.path, b.err = buildHaven(race) })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func buildHaven(race bool) (string, error) {
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir == "" {
		dir, err := os.MkdirTemp("", "haven-test-bin-")
		if err != nil {
			return "", fmt.Errorf("testenv: build haven: %w", err)
		}
		// The postgres user runs it too, as restore_command.
		if err := os.Chmod(dir, 0o711); err != nil {
			return "", fmt.Errorf("testenv: build haven: %w", err)
		}
		built.dir = dir
	}
	name, args := "haven", []string{"build", "-ldflags", "-X main.version=" + Version}
	if race {
		name, args = "haven-race", append(args, "-race")
	}
	path := filepath.Join(built.dir, name)
	args = append(args, "-o", path, "github.com/haven-ha/haven/cmd/haven")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("testenv: go %v: %w\n%s", args, err, out)
	}
	return path, nil
}
