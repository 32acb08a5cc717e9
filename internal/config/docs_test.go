package config

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/certs"
)

// example is a complete haven.yaml of the documentation: its text, and
// where it starts (the document and the line of its first key).
type example struct {
	doc  string
	line int
	data []byte
}

// TestDocExamples loads every complete haven.yaml of the user
// documentation (STYLE rule 4): each ```yaml block of README.md and
// docs/*.md whose first line is "cluster:", and every examples/*.yaml.
// A block that starts with another key (docs/coordination.md's
// `coordination:`, docs/traffic.md's `traffic:`) shows one section of a
// file, not a file, and is skipped; so are the ```yaml blocks that are not
// haven.yaml at all. Each example is loaded as a reader would after
// following the docs: alone in a directory, beside the secret files it
// names (password_file, token_file, secret_file, credentials_file,
// dsn_file) and, with coordination.tls, the certificates `haven certs`
// makes. A problem is reported at its line in the document.
func TestDocExamples(t *testing.T) {
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs/*.md: %v", err)
	}
	docs = append(docs, "../../README.md")
	perDoc := map[string]int{}
	for _, doc := range docs {
		for _, ex := range yamlExamples(t, doc) {
			perDoc[filepath.Base(doc)]++
			loadExample(t, ex)
		}
	}
	// A broken extraction would find nothing and pass: these hold
	// complete files.
	for doc, least := range map[string]int{"configuration.md": 2, "README.md": 1, "database.md": 1, "admin.md": 2} {
		if perDoc[doc] < least {
			t.Errorf("%s has %d complete haven.yaml examples, want at least %d", doc, perDoc[doc], least)
		}
	}
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples/*.yaml: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		loadExample(t, example{doc: f, line: 1, data: data})
	}
}

// yamlExamples returns the ```yaml blocks of a Markdown file that are a
// whole haven.yaml (their first line starts with "cluster:").
func yamlExamples(t *testing.T, doc string) []example {
	t.Helper()
	data, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	var out []example
	var cur *example
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && line == "```yaml":
			cur = &example{doc: doc, line: n + 1}
		case cur != nil && strings.HasPrefix(line, "```"):
			if bytes.HasPrefix(cur.data, []byte("cluster:")) {
				out = append(out, *cur)
			}
			cur = nil
		case cur != nil:
			cur.data = append(append(cur.data, line...), '\n')
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Errorf("%s:%d: a ```yaml block is never closed", doc, cur.line-1)
	}
	return out
}

// loadExample writes ex as haven.yaml in a directory of its own, creates
// the files it names there, and loads it.
func loadExample(t *testing.T, ex example) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "haven.yaml")
	if err := os.WriteFile(path, ex.data, 0o600); err != nil {
		t.Fatal(err)
	}
	// A first parse names the files (resolved against dir); its problems
	// are those of missing files until they exist.
	cfg, _ := Parse(path, ex.data)
	if cfg != nil {
		if err := makeExampleFiles(cfg, dir); err != nil {
			t.Fatalf("%s:%d: %v", ex.doc, ex.line, err)
		}
	}
	_, err := Load(path)
	var ps Problems
	switch {
	case errors.As(err, &ps):
		for _, p := range ps {
			t.Errorf("%s:%d:%d: %s: %s", ex.doc, ex.line+p.Line-1, p.Col, p.Path, p.Msg)
		}
	case err != nil:
		t.Errorf("%s:%d: %v", ex.doc, ex.line, err)
	}
}

// makeExampleFiles creates, inside dir only, the secret files cfg names
// (32 bytes in base64 suit a password, a token, a TSIG key and a backup
// encryption key alike) and the etcd certificates, as `haven certs -o`
// would. A file outside dir
// (an absolute path) is left alone: the load then says it is missing.
func makeExampleFiles(cfg *Config, dir string) error {
	secret := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("haven-docs-test!"), 2)) + "\n"
	var files []string
	files = append(files, cfg.Admin.TokenFile)
	if db := cfg.Database; db != nil && db.Replication != nil {
		files = append(files, db.Replication.PasswordFile)
	}
	if d := cfg.Drills; d != nil {
		files = append(files, d.DSNFile) // its content is read by the drills, not checked
	}
	if tr := cfg.Traffic; tr != nil && tr.TSIG != nil {
		files = append(files, tr.TSIG.SecretFile)
	}
	if db := cfg.Database; db != nil && db.Backup != nil {
		files = append(files, db.Backup.EncryptionKeyFile) // 32 bytes in base64 too
		for _, r := range db.Backup.Repositories {
			if r != nil && r.CredentialsFile != "" {
				files = append(files, r.CredentialsFile)
			}
		}
	}
	for _, f := range files {
		if !inside(dir, f) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(f, []byte(secret), 0o600); err != nil {
			return err
		}
	}
	if co := cfg.Coordination; co != nil && co.TLS != nil && inside(dir, co.TLS.CA) {
		var nodes []certs.Node
		for _, name := range cfg.NodeNames() {
			n, _ := cfg.Node(name)
			nodes = append(nodes, certs.Node{Name: name, Addresses: []string{n.Address}})
		}
		if _, err := certs.Generate(filepath.Dir(co.TLS.CA), cfg.Cluster, nodes, certs.Options{}); err != nil {
			return fmt.Errorf("haven certs: %w", err)
		}
	}
	return nil
}

// inside says whether file is a path below dir.
func inside(dir, file string) bool {
	rel, err := filepath.Rel(dir, file)
	return file != "" && err == nil && !strings.HasPrefix(rel, "..")
}
