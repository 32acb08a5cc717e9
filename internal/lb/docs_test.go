package lb

import (
	"os"
	"regexp"
	"testing"

	"github.com/haven-ha/haven/internal/config"
)

// TestDocExamples: every haven.yaml example in docs/balancer.md loads and
// builds a balancer.
func TestDocExamples(t *testing.T) {
	data, err := os.ReadFile("../../docs/balancer.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(data, -1)
	if len(blocks) == 0 {
		t.Fatal("no yaml examples found in docs/balancer.md")
	}
	for i, b := range blocks {
		cfg, err := config.Parse("docs/balancer.md", b[1])
		if err != nil {
			t.Errorf("example %d: %v", i+1, err)
			continue
		}
		for _, bc := range cfg.Balancers {
			check, _ := cfg.Check(bc.Check)
			if _, err := New(bc, check, Options{}); err != nil {
				t.Errorf("example %d: balancer %s: %v", i+1, bc.Name, err)
			}
		}
	}
}
