package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParse checks that Parse never panics, that every problem with a key
// path has a position, and that parsing is deterministic: the same input
// gives the same Config, warnings and problems a second time.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(minimal))
	f.Add([]byte("a: &a [*a, *a]\nb: *a\n"))
	f.Add([]byte("balancers: {b: {<<: &m {<<: *m}}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg1, err1 := Parse("fuzz.yaml", data)
		cfg2, err2 := Parse("fuzz.yaml", data)
		var ps Problems
		if err1 != nil && !errors.As(err1, &ps) {
			t.Fatalf("Parse returned %T, want Problems", err1)
		}
		for _, p := range ps {
			if p.Path != "" && p.Line < 1 {
				t.Errorf("problem without a position: %q", p.Error())
			}
		}
		if errString(err1) != errString(err2) {
			t.Fatalf("problems differ between two parses:\n%v\n---\n%v", err1, err2)
		}
		if !reflect.DeepEqual(cfg1, cfg2) {
			t.Fatalf("configs differ between two parses of\n%s", data)
		}
	})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
