package config

import (
	"fmt"
	"strings"
)

// closest returns the candidate nearest to s by edit distance when it is
// near enough to be a plausible typo, else "".
func closest(s string, candidates []string) string {
	best, bestDist := "", -1
	for _, c := range candidates {
		d := editDistance(strings.ToLower(s), strings.ToLower(c))
		if bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	// Two edits catch a transposition or a dropped and a doubled letter;
	// more than a third of the word is a different word.
	if bestDist < 0 || bestDist > 2 || bestDist*3 > len(s) {
		return ""
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b,
// by bytes: insertions, deletions, substitutions and transpositions of
// adjacent letters ("wbe" for "web") each count one.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// notOneOf is the message for a value outside a fixed set.
func notOneOf(value string, valid ...string) string {
	return fmt.Sprintf("%q is not one of %s", value, strings.Join(valid, ", "))
}

// andList joins names as "a", "a and b" or "a, b and c".
func andList(names []string) string {
	switch len(names) {
	case 0:
		return ""
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// isToken reports whether s is an HTTP token (RFC 9110 section 5.6.2),
// which is also what a cookie name must be (RFC 6265 section 4.1.1).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// isName reports whether s can name a node, region, check or balancer:
// names appear in key paths, metrics labels and coordination keys, so
// they are kept to letters, digits, '-', '_' and '.'.
func isName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' {
			continue
		}
		return false
	}
	return true
}

// isDomain reports whether s is a DNS name: dot-separated labels of
// letters, digits and inner hyphens, with an optional final dot.
func isDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
