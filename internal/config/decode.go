package config

import (
	"fmt"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxNodes bounds how many nodes one decode visits. Aliases can make a
// small document expand exponentially ("billion laughs"); a real
// haven.yaml has a few hundred nodes.
const maxNodes = 100_000

// decoder walks a YAML node tree against the struct types of this package,
// by their yaml tags, instead of letting yaml.v3 decode the structs: that
// way every unknown key, duplicate and type error is reported with its key
// path and position (yaml.v3's own errors carry a line but no path), and
// decoding goes on after the first one.
type decoder struct {
	*report
	budget int // nodes left to visit; see maxNodes
}

// spend takes cost from the budget and reports, once, when it runs out.
func (d *decoder) spend(cost int, n *yaml.Node, path string) bool {
	if d.budget <= 0 {
		return false
	}
	if d.budget -= cost; d.budget <= 0 {
		d.fail(n, path, "the document expands to more than %d nodes (too many aliases?)", maxNodes)
		return false
	}
	return true
}

// decode stores n into v, which must be addressable, and records where
// the value at path is written.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	d.pos.values[path] = posOf(n)
	if !d.spend(1, n, path) {
		return
	}
	n = resolveAlias(n)
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		// A block collection starts on the line after its key; a message
		// about it as a whole reads better pointing at the key.
		if kp, ok := d.pos.keys[path]; ok && n.Style&yaml.FlowStyle == 0 {
			d.pos.values[path] = kp
		}
	}
	if isNull(n) {
		// "tls:" or "icmp:" with nothing after it declares the section,
		// but a scalar or list with nothing after it is not given at all.
		if v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Struct {
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			return
		}
		delete(d.pos.values, path)
		return
	}
	if u, ok := v.Addr().Interface().(yaml.Unmarshaler); ok {
		if err := u.UnmarshalYAML(n); err != nil {
			d.fail(n, path, "%v", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		at := d.pos.values[path] // keep the alias site, not the anchor's
		d.decode(n, v.Elem(), path)
		d.pos.values[path] = at
		if d.failed[path] && v.Type().Elem().Kind() != reflect.Struct {
			// Back to "not given", so that the default applies and
			// validation does not trip over a half-decoded value.
			v.SetZero()
		}
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Map:
		d.decodeMap(n, v, path)
	case reflect.Slice:
		d.decodeSlice(n, v, path)
	default:
		d.decodeScalar(n, v, path)
	}
}

// fail reports a value that could not be decoded and marks its path so
// that validation does not report the zero left in its place.
func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.failed[path] = true
	d.errorAt(posOf(n), path, format, args...)
}

// shorthand is a section that may also be written as one scalar, such as
// `vip: 198.18.1.100/24` for `vip: {address: 198.18.1.100/24}`.
type shorthand interface {
	// shorthandKey is the key the scalar stands for.
	shorthandKey() string
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	keys := yamlKeys(v.Type())
	if s, ok := v.Addr().Interface().(shorthand); ok && n.Kind == yaml.ScalarNode {
		f, _ := fieldByKey(v, s.shorthandKey())
		d.decode(n, f, join(path, s.shorthandKey()))
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want a mapping with keys %s, got %s", strings.Join(keys, ", "), describe(n))
		return
	}
	d.eachKey(n, path, func(key string, value *yaml.Node, kpath string) {
		f, ok := fieldByKey(v, key)
		if !ok {
			d.unknownKey(kpath, key, keys)
			return
		}
		d.decode(value, f, kpath)
	})
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want a mapping of names, got %s", describe(n))
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	d.eachKey(n, path, func(key string, value *yaml.Node, kpath string) {
		elem := reflect.New(v.Type().Elem()).Elem()
		d.decode(value, elem, kpath)
		v.SetMapIndex(reflect.ValueOf(key), allocated(elem))
	})
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "want a list, got %s", describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		ipath := index(path, i)
		d.pos.keys[ipath] = posOf(item)
		d.decode(item, s.Index(i), ipath)
		allocated(s.Index(i))
	}
	v.Set(s)
}

func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value, path string) {
	want := scalarWant(v.Kind())
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "want %s, got %s", want, describe(n))
		return
	}
	// yaml.v3 truncates 1.5 to 1 when it decodes into an int; a count
	// written with a fraction is a mistake worth reporting.
	notInt := v.CanInt() && n.ShortTag() != "!!int"
	if err := n.Decode(v.Addr().Interface()); err != nil || notInt {
		d.fail(n, path, "%q is not %s", n.Value, want)
	}
}

func scalarWant(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "a " + k.String()
}

// eachKey calls fn for every entry of the mapping n, merge keys expanded,
// after reporting keys that are not strings and keys given twice.
func (d *decoder) eachKey(n *yaml.Node, path string, fn func(key string, value *yaml.Node, kpath string)) {
	first := map[string]int{}
	for _, p := range d.pairs(n, path, nil) {
		if p.key.Kind != yaml.ScalarNode {
			d.errorAt(posOf(p.key), path, "a key must be a plain name, got %s", describe(p.key))
			continue
		}
		key := p.key.Value
		kpath := join(path, key)
		if line, dup := first[key]; dup {
			d.errorAt(posOf(p.key), kpath, "duplicate key: %s is already given on line %d", key, line)
			continue
		}
		first[key] = p.key.Line
		d.pos.keys[kpath] = posOf(p.key)
		fn(key, p.value, kpath)
	}
}

type pair struct{ key, value *yaml.Node }

// pairs lists the entries of the mapping n with YAML merge keys ("<<:
// *defaults") expanded: an entry written in n itself wins over a merged
// one, and an earlier merged mapping wins over a later one. inMerge holds
// the mappings being merged, to stop a mapping that merges itself.
func (d *decoder) pairs(n *yaml.Node, path string, inMerge map[*yaml.Node]bool) []pair {
	var own, merged []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merged = append(merged, d.merge(v, path, inMerge)...)
			continue
		}
		own = append(own, pair{k, v})
	}
	if len(merged) == 0 {
		return own
	}
	written := map[string]bool{}
	for _, p := range own {
		written[p.key.Value] = true
	}
	for _, p := range merged {
		if !written[p.key.Value] {
			written[p.key.Value] = true
			own = append(own, p)
		}
	}
	return own
}

func (d *decoder) merge(v *yaml.Node, path string, inMerge map[*yaml.Node]bool) []pair {
	v = resolveAlias(v)
	var sources []*yaml.Node
	switch v.Kind {
	case yaml.MappingNode:
		sources = []*yaml.Node{v}
	case yaml.SequenceNode:
		for _, s := range v.Content {
			sources = append(sources, resolveAlias(s))
		}
	}
	if inMerge == nil {
		inMerge = map[*yaml.Node]bool{}
	}
	var out []pair
	for _, s := range sources {
		if !d.spend(len(s.Content)/2+1, s, path) {
			return out
		}
		if s.Kind != yaml.MappingNode {
			d.errorAt(posOf(v), path, "<< must merge a mapping or a list of mappings, got %s", describe(s))
			continue
		}
		if inMerge[s] {
			d.errorAt(posOf(v), path, "<< merges a mapping into itself")
			continue
		}
		inMerge[s] = true
		out = append(out, d.pairs(s, path, inMerge)...)
		delete(inMerge, s)
	}
	if len(sources) == 0 {
		d.errorAt(posOf(v), path, "<< must merge a mapping or a list of mappings, got %s", describe(v))
	}
	return out
}

// unknownKey reports a key the struct at its place does not have, with
// the closest valid key and all of them.
func (d *decoder) unknownKey(kpath, key string, valid []string) {
	at := d.pos.keys[kpath]
	if len(valid) == 0 {
		d.errorAt(at, kpath, "unknown key: %s takes no keys", parent(kpath))
		return
	}
	hint := ""
	if s := closest(key, valid); s != "" {
		hint = fmt.Sprintf(" (did you mean %s?)", s)
	}
	d.errorAt(at, kpath, "unknown key%s; valid keys here are %s", hint, strings.Join(valid, ", "))
}

// yamlKeys lists the keys a struct type accepts, in declaration order.
func yamlKeys(t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		if k := yamlKey(f); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

func fieldByKey(v reflect.Value, key string) (reflect.Value, bool) {
	for f, fv := range v.Fields() {
		if yamlKey(f) == key {
			return fv, true
		}
	}
	return reflect.Value{}, false
}

// yamlKey returns the key of a struct field, "" for fields that are not
// part of the file.
func yamlKey(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	switch name {
	case "-":
		return ""
	case "":
		return strings.ToLower(f.Name)
	}
	return name
}

// allocated makes sure that a pointer to a struct in a map or a list is
// not nil, even when its value could not be decoded: defaults, validation
// and consumers then never meet a nil section.
func allocated(v reflect.Value) reflect.Value {
	if v.Kind() == reflect.Pointer && v.IsNil() && v.Type().Elem().Kind() == reflect.Struct {
		v.Set(reflect.New(v.Type().Elem()))
	}
	return v
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	// An anchor cannot be put on an alias, so one step suffices; the
	// bound is only defensive.
	for i := 0; i < 8 && n.Kind == yaml.AliasNode && n.Alias != nil; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node is, for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	switch resolveAlias(n).Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "an alias"
}
