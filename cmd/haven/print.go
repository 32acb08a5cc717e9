package main

import (
	"maps"
	"slices"
)

// sortedKeys returns m's keys in order, for output that does not change
// from one run to the next.
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// orDash is s, or "-" for an empty table cell.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
