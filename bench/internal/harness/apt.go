package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Policy is the value of a harness's -install flag: when it may run
// apt-get.
type Policy string

// The policies.
const (
	Auto   Policy = "auto"   // install what is missing
	Always Policy = "always" // run apt-get even when nothing is missing
	Never  Policy = "never"  // install nothing
)

// Check returns an error naming the flag unless p is one of the policies.
func (p Policy) Check() error {
	switch p {
	case Auto, Always, Never:
		return nil
	}
	return fmt.Errorf("-install %q is not one of auto, always, never", string(p))
}

// RunApt reports whether p asks for apt-get when missing of the needed
// packages are not installed.
func (p Policy) RunApt(missing int) bool {
	return p == Always || (p == Auto && missing > 0)
}

// aptEnv keeps apt-get from asking questions.
var aptEnv = []string{"DEBIAN_FRONTEND=noninteractive"}

// Installed reports whether dpkg says the Debian package pkg is installed.
func Installed(pkg string) bool {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", pkg).Output()
	return err == nil && strings.TrimSpace(string(out)) == "install ok installed"
}

// Missing returns those of pkgs that are not installed, in their order.
func Missing(pkgs ...string) []string {
	var out []string
	for _, p := range pkgs {
		if !Installed(p) {
			out = append(out, p)
		}
	}
	return out
}

// PackageVersion returns the version of the installed Debian package pkg.
func PackageVersion(pkg string) (string, error) {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Version}", pkg).Output()
	if err != nil {
		return "", fmt.Errorf("dpkg-query %s: %w", pkg, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// AptUpdate runs apt-get update.
func AptUpdate(ctx context.Context) error {
	Logf("apt-get update")
	if _, err := Run(ctx, 10*time.Minute, aptEnv, "apt-get", "update", "-q"); err != nil {
		return fmt.Errorf("apt-get update: %w", err)
	}
	return nil
}

// AptInstall runs apt-get install -y -q with args: the packages, and any
// option such as --reinstall.
func AptInstall(ctx context.Context, args ...string) error {
	argv := append([]string{"apt-get", "install", "-y", "-q"}, args...)
	Logf("%s", strings.Join(argv, " "))
	if out, err := Run(ctx, 15*time.Minute, aptEnv, argv...); err != nil {
		return fmt.Errorf("apt-get install: %w: %s", err, LastLines(out, 5))
	}
	return nil
}

// Ensure installs pkgs as the policy says: under Auto those missing, under
// Always all of them again (--reinstall), under Never none, when a missing
// one is an error that names it. It checks that every one is installed
// after apt-get.
func (p Policy) Ensure(ctx context.Context, pkgs ...string) error {
	if len(pkgs) == 0 {
		return nil
	}
	missing := Missing(pkgs...)
	if !p.RunApt(len(missing)) {
		if len(missing) > 0 {
			return fmt.Errorf("%s not installed and -install is never", strings.Join(missing, ", "))
		}
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("run as root to install %s", strings.Join(pkgs, ", "))
	}
	if err := AptUpdate(ctx); err != nil {
		return err
	}
	args := missing
	if p == Always {
		args = append([]string{"--reinstall"}, pkgs...)
	}
	if err := AptInstall(ctx, args...); err != nil {
		return err
	}
	if m := Missing(pkgs...); len(m) > 0 {
		return fmt.Errorf("still not installed after apt-get: %s", strings.Join(m, ", "))
	}
	return nil
}
