package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBinaryLinksNoTestCode: the binary that ships links no test code:
// no package imports testing (or testing/...), which haven's test-support
// packages (testenv, testnet, coordtest) do. Programs that need namespace
// hosts use internal/netlab, not internal/testnet.
func TestBinaryLinksNoTestCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", "github.com/haven-ha/haven/cmd/haven").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		for _, imp := range fields[1:] {
			if imp == "testing" || strings.HasPrefix(imp, "testing/") {
				t.Errorf("cmd/haven links %s: %s imports it", imp, fields[0])
			}
		}
	}
}
