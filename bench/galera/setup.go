package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// tools are the programs the peer's nodes run, found once.
type tools struct {
	mariadbd, installDB, client, provider string
	mysqlUID, mysqlGID                    int
}

// providerPaths are where Debian's galera-4 (and others) put the provider.
var providerPaths = []string{"/usr/lib/galera/libgalera_smm.so", "/usr/lib/libgalera_smm.so", "/usr/lib64/galera-4/libgalera_smm.so"}

// setup installs what is missing, builds haven, finds the tools and
// records the machine and the versions for the report.
func (b *bench) setup(ctx context.Context) error {
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("needs %s (iproute2, nftables): %w", tool, err)
		}
	}
	need := []string{"mariadb-server", "galera-4", "mariadb-backup"}
	for _, n := range b.opt.targets {
		t, _ := findTarget(n)
		if t.router != "" && !slices.Contains(need, t.router) {
			need = append(need, t.router)
		}
	}
	if err := b.opt.install.Ensure(ctx, need...); err != nil {
		return err
	}
	if err := b.findTools(); err != nil {
		return err
	}
	b.buildHaven(ctx)
	b.machine = append(harness.Machine(), "load average at start: "+harness.LoadAverage())
	b.describeVersions(ctx)
	for _, l := range append(append([]string{}, b.machine...), b.versions...) {
		harness.Logf("%s", l)
	}
	return nil
}

func (b *bench) findTools() error {
	look := func(names ...string) (string, error) {
		for _, n := range names {
			for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
				if p := dir + "/" + n; fileExists(p) {
					return p, nil
				}
			}
			if p, err := exec.LookPath(n); err == nil {
				return p, nil
			}
		}
		return "", fmt.Errorf("no %s: apt-get install mariadb-server galera-4 mariadb-backup", names[0])
	}
	var err error
	t := &b.tools
	if t.mariadbd, err = look("mariadbd", "mysqld"); err != nil {
		return err
	}
	if t.installDB, err = look("mariadb-install-db", "mysql_install_db"); err != nil {
		return err
	}
	if t.client, err = look("mariadb", "mysql"); err != nil {
		return err
	}
	for _, p := range providerPaths {
		if fileExists(p) {
			t.provider = p
		}
	}
	if t.provider == "" {
		return fmt.Errorf("no galera provider in %s: apt-get install galera-4", strings.Join(providerPaths, ", "))
	}
	u, err := user.Lookup("mysql")
	if err != nil {
		return fmt.Errorf("no mysql user (apt-get install mariadb-server): %w", err)
	}
	t.mysqlUID, _ = strconv.Atoi(u.Uid)
	t.mysqlGID, _ = strconv.Atoi(u.Gid)
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// buildHaven builds the agent from the working tree. A failure is not
// fatal: haven's rows then say why and the peer's still run.
func (b *bench) buildHaven(ctx context.Context) {
	for _, n := range b.opt.targets {
		if t, _ := findTarget(n); t.kind == "haven" {
			b.havenBin, b.havenErr = harness.BuildHaven(ctx, b.root, b.dir)
			if b.havenErr != nil {
				harness.Logf("haven: %v", b.havenErr)
			}
			return
		}
	}
}

// describeVersions records the version of every tool in the run.
func (b *bench) describeVersions(ctx context.Context) {
	haven := harness.HavenVersion(ctx, b.root, true)
	if b.havenErr != nil {
		haven += " (build failed)"
	}
	version := func(pkg string, argv ...string) string {
		out, _ := harness.Run(ctx, 20*time.Second, nil, argv...)
		s := harness.FirstLine(out)
		if v, err := harness.PackageVersion(pkg); err == nil {
			s += " (Debian package " + v + ")"
		}
		return s
	}
	b.versions = []string{haven, version("mariadb-server", b.tools.mariadbd, "--version")}
	if v, err := harness.PackageVersion("galera-4"); err == nil {
		b.versions = append(b.versions, "galera-4 provider (Debian package "+v+")")
	}
	for _, n := range b.opt.targets {
		t, _ := findTarget(n)
		switch t.router {
		case "keepalived":
			b.versions = append(b.versions, version("keepalived", "keepalived", "--version"))
		case "haproxy":
			b.versions = append(b.versions, version("haproxy", "haproxy", "-v"))
		}
	}
	gover, _ := harness.Run(ctx, 10*time.Second, nil, "go", "version")
	b.versions = append(b.versions, harness.FirstLine(gover))
}
