package health

import (
	"os"
	"regexp"
	"testing"

	"github.com/haven-ha/haven/internal/config"
)

var yamlBlock = regexp.MustCompile("(?s)```yaml\n(.*?)```")

// TestDocExamples loads every yaml example of docs/health.md (STYLE rule 4)
// and builds the Prober and Spec of each of its checks.
func TestDocExamples(t *testing.T) {
	const doc = "../../docs/health.md"
	data, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	blocks := yamlBlock.FindAllSubmatch(data, -1)
	if len(blocks) < 2 {
		t.Fatalf("%s has %d yaml examples, want at least 2", doc, len(blocks))
	}
	for i, b := range blocks {
		cfg, err := config.Parse(doc, b[1])
		if err != nil {
			t.Errorf("example %d does not load:\n%v", i+1, err)
			continue
		}
		for name, c := range cfg.Checks {
			if _, err := NewProber(c); err != nil {
				t.Errorf("example %d: check %s: %v", i+1, name, err)
			}
			if s := SpecFromConfig(c); s.Timeout > s.Interval || s.FastInterval > s.Interval {
				t.Errorf("example %d: check %s: spec %+v", i+1, name, s)
			}
		}
	}
}
