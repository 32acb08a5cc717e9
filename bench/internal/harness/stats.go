package harness

import "slices"

// Number is what Median and Percentile work on: counts, durations, rates.
type Number interface {
	~int | ~int64 | ~float64
}

// Median returns the median of v, which it leaves as it is: the middle
// value, or the mean of the two middle values of an even count; 0 for none.
func Median[T Number](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Percentile returns the value of v at percentile p (0 to 100) by the
// nearest rank from below: the len(v)*p/100-th smallest, counting from 0,
// so that Percentile(v, 50) is the upper of the two middle values of an
// even count. It leaves v as it is; 0 for none.
func Percentile[T Number](v []T, p int) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)*p/100, len(s)-1)]
}
