package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// buildDeb builds the .deb as `make package` does, from this tree's
// nfpm.yaml, with the shipping binary, and returns its path. Only the
// sources' roots change: nfpm reads them relative to its working
// directory, the repository's root in the Makefile.
func buildDeb(t *testing.T) string {
	t.Helper()
	nfpm, err := exec.LookPath("nfpm")
	testenv.Need(t, err == nil, "needs nfpm (make prereqs builds it: go install github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0)")
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("nfpm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bin := testenv.Haven(t)
	completion, err := exec.Command(bin, "completion", "bash").Output()
	if err != nil {
		t.Fatalf("haven completion bash: %v", err)
	}
	dir := t.TempDir()
	bashFile := filepath.Join(dir, "haven.bash")
	if err := os.WriteFile(bashFile, completion, 0o644); err != nil {
		t.Fatal(err)
	}
	src := regexp.MustCompile(`(?m)^(\s*(?:- )?(?:src|postinstall|preremove|postremove): )(\S+)$`)
	conf := src.ReplaceAllStringFunc(string(b), func(line string) string {
		m := src.FindStringSubmatch(line)
		switch m[2] {
		case "bin/haven":
			return m[1] + bin
		case "bin/haven.bash":
			return m[1] + bashFile
		}
		return m[1] + filepath.Join(repo, m[2]) + map[bool]string{true: "/"}[strings.HasSuffix(m[2], "/")]
	})
	cfg := filepath.Join(dir, "nfpm.yaml")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "dist")
	os.Mkdir(out, 0o755)
	cmd := exec.Command(nfpm, "package", "--config", cfg, "--packager", "deb", "--target", out)
	cmd.Env = append(os.Environ(), "GOARCH="+runtime.GOARCH, "HAVEN_VERSION=0.0.0~test")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nfpm package: %v\n%s", err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("nfpm made %v, want one .deb", debs)
	}
	return debs[0]
}

func dpkgDeb(t *testing.T, args ...string) string {
	t.Helper()
	b, err := exec.Command("dpkg-deb", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return string(b)
}

// TestPackageInstallsAndItsUnitVerifies builds the .deb, installs it into a
// scratch root, and checks what an operator relies on: the binary runs,
// the configuration is a conffile dpkg keeps across upgrades, the state
// directory is private, the package depends on what the agent runs, and
// systemd-analyze verify finds nothing to say about the unit.
func TestPackageInstallsAndItsUnitVerifies(t *testing.T) {
	testenv.NeedCommand(t, "dpkg-deb", "dpkg")
	analyze := testenv.NeedCommand(t, "systemd-analyze", "systemd")
	deb := buildDeb(t)

	control := dpkgDeb(t, "--field", deb, "Package", "Depends", "Architecture", "Version")
	for _, want := range []string{"Package: haven", "iproute2", "nftables", "Version: 0.0.0~test", "Architecture: " + runtime.GOARCH} {
		if !strings.Contains(control, want) {
			t.Errorf("control fields lack %q:\n%s", want, control)
		}
	}
	meta := t.TempDir()
	dpkgDeb(t, "--control", deb, meta)
	conffiles, _ := os.ReadFile(filepath.Join(meta, "conffiles"))
	if strings.TrimSpace(string(conffiles)) != "/etc/haven/haven.yaml" {
		t.Errorf("conffiles %q, want /etc/haven/haven.yaml: an upgrade must keep the operator's file", conffiles)
	}
	for _, script := range []string{"postinst", "prerm", "postrm"} {
		if _, err := os.Stat(filepath.Join(meta, script)); err != nil {
			t.Errorf("no %s: %v", script, err)
		}
	}

	root := t.TempDir()
	dpkgDeb(t, "--extract", deb, root)
	if out, err := exec.Command(filepath.Join(root, "usr/bin/haven"), "version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "haven ") {
		t.Errorf("the installed haven version: %q, %v", out, err)
	}
	shipped, _ := os.ReadFile(filepath.Join(root, "etc/haven/haven.yaml"))
	example, _ := os.ReadFile("../examples/production.yaml")
	if len(shipped) == 0 || !bytes.Equal(shipped, example) {
		t.Errorf("/etc/haven/haven.yaml is not examples/production.yaml (%d bytes)", len(shipped))
	}
	// PostgreSQL runs as postgres under it (/var/lib/haven/pg).
	if fi, err := os.Stat(filepath.Join(root, "var/lib/haven")); err != nil || !fi.IsDir() || fi.Mode().Perm()&0o001 == 0 {
		t.Errorf("/var/lib/haven: %v, %v; want a directory others may pass through", fi, err)
	}
	for _, doc := range []string{"usr/share/doc/haven/docs/install.md", "usr/share/doc/haven/examples/warm-standby.yaml", "usr/share/bash-completion/completions/haven"} {
		if _, err := os.Stat(filepath.Join(root, doc)); err != nil {
			t.Errorf("the package lacks /%s: %v", doc, err)
		}
	}

	// systemd-analyze resolves the unit's dependencies and commands inside
	// the root: give it the system's own units and kill(1), as a
	// machine where the package is installed has them.
	os.MkdirAll(filepath.Join(root, "usr/lib/systemd"), 0o755)
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	for _, c := range [][2]string{{"/usr/lib/systemd/system", "usr/lib/systemd/"}, {"/bin/kill", "bin/kill"}} {
		_, err := os.Stat(c[0])
		testenv.Need(t, err == nil, "needs %s (apt-get install systemd procps)", c[0])
		if out, err := exec.Command("cp", "-a", c[0], filepath.Join(root, c[1])).CombinedOutput(); err != nil {
			t.Fatalf("cp -a %s: %v\n%s", c[0], err, out)
		}
	}
	cmd := exec.Command(analyze, "verify", "--root="+root, "haven@db1.service")
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify haven@db1.service: %v\n%s", err, out)
	}
	// A volume's node: the shipped drop-in, copied into place as
	// docs/volume.md says, verifies too.
	dropin := filepath.Join(root, "etc/systemd/system/haven@st1.service.d")
	if err := os.MkdirAll(dropin, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "usr/share/doc/haven/systemd/volume.conf"))
	if err != nil {
		t.Fatalf("the package lacks the volume drop-in: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dropin, "volume.conf"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(analyze, "verify", "--root="+root, "haven@st1.service").CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify haven@st1.service with the volume drop-in: %v\n%s", err, out)
	}
}
