package pg

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// fenceRE finds the fenced blocks of a Markdown page, with their language.
var fenceRE = regexp.MustCompile("(?ms)^```(\\w*)\\n(.*?)^```")

// TestDocExamples checks docs/pg.md against the code (STYLE rule 4): its Go
// examples are the bodies of runServer, runReplica and runSupervised in
// example_test.go, which compile, and its haven.conf is what that
// configuration renders.
func TestDocExamples(t *testing.T) {
	doc, err := os.ReadFile("../../docs/pg.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := map[string][]string{}
	for _, m := range fenceRE.FindAllStringSubmatch(string(doc), -1) {
		blocks[m[1]] = append(blocks[m[1]], m[2])
	}
	if len(blocks["go"]) != 3 || len(blocks["conf"]) != 1 {
		t.Fatalf("docs/pg.md has %d go and %d conf examples; want 3 and 1", len(blocks["go"]), len(blocks["conf"]))
	}

	example, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	for i, fn := range []string{
		"func runServer(ctx context.Context, logger *slog.Logger) error {\n",
		"func runReplica(ctx context.Context, primary, replica *pg.Server, password string) error {\n",
		"func runSupervised(ctx context.Context, srv *pg.Server, logger *slog.Logger, reg prometheus.Registerer) error {\n",
	} {
		_, body, _ := strings.Cut(string(example), fn)
		body, _, _ = strings.Cut(body, "\n}\n")
		if got, want := dedent(body), dedent(blocks["go"][i]); got != want {
			t.Errorf("Go example %d of docs/pg.md is not %s in example_test.go:\n--- docs\n%s\n--- example_test.go\n%s", i+1, fn, want, got)
		}
	}

	s, err := check(Config{
		DataDir:         "/var/lib/haven/pg/data",
		ListenAddresses: []string{"198.18.1.21"},
		Settings:        map[string]string{"shared_buffers": "1GB"},
		HBA:             []string{"host all all 198.18.1.0/24 scram-sha-256"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(s.renderHavenConf()); got != blocks["conf"][0] {
		t.Errorf("the haven.conf of docs/pg.md is not what haven writes:\n%s", got)
	}
}

// dedent removes the leading tabs of every line and the blank lines.
func dedent(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if line = strings.TrimLeft(line, "\t"); strings.TrimSpace(line) != "" {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
