package main

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/testenv"
)

// TestCompletion runs bash's completion as bash does, against the binary:
// the commands, a command's actions (from its usage, so a new action is
// completed without touching the script), and the node and backend names
// of the file in $HAVEN_CONFIG.
func TestCompletion(t *testing.T) {
	bash := testenv.NeedCommand(t, "bash", "bash")
	bin := testenv.Haven(t)
	cfg, err := filepath.Abs("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// dir holds a "haven" that is the binary, for the script to call.
	dir := t.TempDir()
	if err := exec.Command("ln", "-s", bin, filepath.Join(dir, "haven")).Run(); err != nil {
		t.Fatal(err)
	}
	compl := func(line ...string) []string {
		t.Helper()
		words := append([]string{"haven"}, line...)
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		script := `source <(haven completion bash)
COMP_WORDS=(` + strings.Join(quoted, " ") + `)
COMP_CWORD=` + strconv.Itoa(len(words)-1) + `
_haven
printf '%s\n' "${COMPREPLY[@]}"`
		cmd := exec.Command(bash, "-c", script)
		cmd.Env = append(cmd.Environ(), "PATH="+dir+":/usr/bin:/bin", "HAVEN_CONFIG="+cfg)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("completing %q: %v\n%s", line, err, out)
		}
		got := strings.Fields(string(out))
		slices.Sort(got)
		return got
	}
	for _, tc := range []struct {
		line []string
		want []string
	}{
		{[]string{"d"}, []string{"db", "demo", "dns", "doctor", "dr", "drill"}},
		{[]string{"db", "b"}, []string{"bootstrap"}},
		{[]string{"lb", ""}, []string{"drain", "enable", "maint", "status", "weight"}},
		{[]string{"pg", "s"}, []string{"status", "switchover"}},
		{[]string{"lb", "drain", ""}, []string{"127.0.0.1:9001", "127.0.0.1:9002"}},
		{[]string{"doctor", "-n", ""}, []string{"lb1"}},
		{[]string{"completion", ""}, []string{"bash"}},
		{[]string{"status", "-o", ""}, []string{"json", "text"}},
	} {
		if got := compl(tc.line...); !slices.Equal(got, tc.want) {
			t.Errorf("haven %s<TAB>: %q, want %q", strings.Join(tc.line, " "), got, tc.want)
		}
	}
}
