// Package config reads haven.yaml: strict decoding, defaults, then
// validation whose errors carry file:line:col, the key path, the bad value
// and what would be valid.
//
// Load and Parse run three phases, in this order, over one document:
//
//  1. decode: the YAML node tree is walked against the struct types in
//     types.go. Unknown keys, duplicate keys and values of the wrong type
//     are problems; the position of every key and value is recorded.
//  2. defaults: every defaulted field is filled in, so that consumers never
//     see a zero where a default exists, and names are copied from map keys.
//  3. validation: values, references between sections, listener collisions
//     and zone anti-affinity.
//
// Every problem of every phase is collected, so that one run of
// `haven check` lists all of them.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads and parses the file at path; see Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes, defaults and validates data, a haven.yaml document. file
// names the document in messages, as given, and its directory is the base
// of relative file paths in the document (tls.cert, admin.token_file).
//
// When data has problems Parse returns them as Problems, together with the
// partial Config so that callers can still print its Warnings; that Config
// must not be run.
func Parse(file string, data []byte) (*Config, error) {
	r := newReport(file)
	cfg := &Config{File: file, positions: r.pos}
	if root := r.document(data); root != nil {
		d := &decoder{report: r, budget: maxNodes}
		d.decode(root, reflect.ValueOf(cfg).Elem(), "")
		// A document that exhausted the decoding budget is hostile or
		// broken; its expansion problem is the one worth reading.
		if d.budget > 0 {
			applyDefaults(cfg, r, filepath.Dir(file))
			validate(cfg, r)
		}
	}
	cfg.Warnings = r.warnings.sorted().lines()
	if len(r.problems) > 0 {
		return cfg, r.problems.sorted()
	}
	return cfg, nil
}

// Problem is one thing wrong with a configuration, at a place in its file.
type Problem struct {
	File      string
	Line, Col int // 1-based; 0 when unknown
	Path      string
	Msg       string
}

// Error formats p as "file:line:col: path: msg", leaving out what is unknown.
func (p Problem) Error() string {
	loc := []string{}
	if p.File != "" {
		loc = append(loc, p.File)
	}
	if p.Line > 0 {
		loc = append(loc, strconv.Itoa(p.Line))
		if p.Col > 0 {
			loc = append(loc, strconv.Itoa(p.Col))
		}
	}
	var b strings.Builder
	if len(loc) > 0 {
		b.WriteString(strings.Join(loc, ":") + ": ")
	}
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems are all the problems of one configuration, in file order.
type Problems []Problem

// Error formats one problem per line.
func (ps Problems) Error() string { return strings.Join(ps.lines(), "\n") }

func (ps Problems) lines() []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Error())
	}
	return out
}

// sorted orders problems by position; problems at one position keep the
// order in which they were found, which is deterministic.
func (ps Problems) sorted() Problems {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Col - b.Col
	})
	return ps
}

// position is a 1-based line and column in the file.
type position struct{ line, col int }

func posOf(n *yaml.Node) position { return position{n.Line, n.Column} }

// positions maps key paths such as "balancers.web.backends[0].address" to
// where their key and their value are written, so that validation, which
// sees only structs, can point at the exact place.
type positions struct {
	keys   map[string]position
	values map[string]position
}

// find returns the position of path's value or, when path was not written
// (a required key is missing), that of the key of its nearest written
// ancestor.
func (p *positions) find(path string) position {
	if pos, ok := p.values[path]; ok {
		return pos
	}
	for path != "" {
		path = parent(path)
		if pos, ok := p.keys[path]; ok {
			return pos
		}
	}
	return position{}
}

// parent strips the last element of a key path: "a.b[2]" → "a.b" → "a".
func parent(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// report collects the problems and warnings of one Parse, with the
// positions they point at.
type report struct {
	file     string
	pos      *positions
	failed   map[string]bool // paths whose value could not be decoded
	problems Problems
	warnings Problems
}

func newReport(file string) *report {
	return &report{
		file:   file,
		pos:    &positions{keys: map[string]position{}, values: map[string]position{}},
		failed: map[string]bool{},
	}
}

func (r *report) add(to *Problems, at position, path, format string, args []any) {
	*to = append(*to, Problem{File: r.file, Line: at.line, Col: at.col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// errorAt reports a problem at an explicit position (decoding uses it,
// since it has the node at hand).
func (r *report) errorAt(at position, path, format string, args ...any) {
	r.add(&r.problems, at, path, format, args)
}

// errorf reports a problem with the value at path. A path whose value, or
// an ancestor's, could not be decoded is skipped: its decoding problem says
// all there is to say, and the zero left in its place would only add noise.
func (r *report) errorf(path, format string, args ...any) {
	if r.decodeFailed(path) {
		return
	}
	r.add(&r.problems, r.pos.find(path), path, format, args)
}

// keyErrorf reports a problem with the key at path itself (a bad name).
func (r *report) keyErrorf(path, format string, args ...any) {
	at, ok := r.pos.keys[path]
	if !ok {
		at = r.pos.find(path)
	}
	r.add(&r.problems, at, path, format, args)
}

// warnf records a warning about the value at path.
func (r *report) warnf(path, format string, args ...any) {
	r.add(&r.warnings, r.pos.find(path), path, format, args)
}

// given reports whether path was written in the file (as opposed to being
// defaulted or left out).
func (r *report) given(path string) bool {
	_, ok := r.pos.values[path]
	return ok
}

func (r *report) decodeFailed(path string) bool {
	for {
		if r.failed[path] {
			return true
		}
		if path == "" {
			return false
		}
		path = parent(path)
	}
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// document parses data into a node tree and returns its root mapping, or
// nil after reporting why there is none.
func (r *report) document(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	err := dec.Decode(&doc)
	if errors.Is(err, io.EOF) || (err == nil && isEmptyDocument(&doc)) {
		r.errorAt(position{1, 1}, "", "the file is empty: want a mapping with at least cluster, regions and balancers (see docs/configuration.md)")
		return nil
	}
	if err != nil {
		r.syntaxError(err)
		return nil
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		r.errorAt(posOf(&next), "", "a second YAML document starts here: haven.yaml holds exactly one")
	} else if !errors.Is(err, io.EOF) {
		r.syntaxError(err)
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		r.errorAt(posOf(root), "", "want a mapping of top-level keys (%s), got %s", strings.Join(yamlKeys(reflect.TypeFor[Config]()), ", "), describe(root))
		return nil
	}
	r.pos.keys[""], r.pos.values[""] = posOf(root), posOf(root)
	return root
}

func isEmptyDocument(doc *yaml.Node) bool {
	return len(doc.Content) == 0 || isNull(doc.Content[0])
}

// syntaxError turns a YAML parser error into a problem, with its line when
// the parser gives one.
func (r *report) syntaxError(err error) {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		r.errorAt(position{line: line}, "", "invalid YAML: %s", m[2])
		return
	}
	r.errorAt(position{}, "", "invalid YAML: %s", strings.TrimPrefix(msg, "yaml: "))
}
