package main

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/doctor"
)

// TestDoctor: haven doctor names a taken port with the key that moves it
// and exits 1; the same machine with the port free passes, and -o json
// gives the findings to a script. A file that does not load is a finding
// too, not a crash.
func TestDoctor(t *testing.T) {
	admin, listen := freeAddr(t), freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "haven.yaml")
	if err := os.WriteFile(cfg, []byte(e2eConfig(admin, listen, []e2eBackend{{name: "app1", addr: "127.0.0.1:9"}}, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	doctorRun := func(args ...string) (int, string) {
		var out, errb strings.Builder
		code := run(append([]string{"doctor", "-c", cfg}, args...), &out, &errb)
		return code, out.String() + errb.String()
	}

	taken, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	code, out := doctorRun("-n", "lb1")
	taken.Close()
	if code != 1 || !strings.Contains(out, "FAIL  ports") || !strings.Contains(out, "balancers.web.listen") {
		t.Fatalf("haven doctor with the balancer's port %s taken: exit %d\n%s", listen, code, out)
	}

	code, out = doctorRun("-n", "lb1", "-o", "json")
	var fs []doctor.Finding
	if err := json.Unmarshal([]byte(out), &fs); code != 0 || err != nil || len(fs) < 3 {
		t.Fatalf("haven doctor -o json on a free machine: exit %d, %v\n%s", code, err, out)
	}

	if err := os.WriteFile(cfg, []byte("cluster: x\nbalancers: {web: {listen: nowhere}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out = doctorRun("-n", "lb1")
	if code != 1 || !strings.Contains(out, "FAIL  config") {
		t.Fatalf("haven doctor on a file that does not load: exit %d\n%s", code, out)
	}
}
