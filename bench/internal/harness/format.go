package harness

import (
	"fmt"
	"math"
	"time"
)

// NotOver stands for a write gap that had not ended when the writer
// stopped (the same value as internal/drill/pgwrite.Never).
const NotOver = time.Duration(math.MaxInt64)

// Gap formats a write gap: "not over" for NotOver.
func Gap(d time.Duration) string {
	if d == NotOver || d < 0 {
		return "not over"
	}
	return Dur(d)
}

// Dur formats d as "552 ms" below a second and "3.29 s" above.
func Dur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Round(time.Millisecond).Milliseconds())
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// Ms is d in whole milliseconds, or "∞" for a gap not over.
func Ms(d time.Duration) string {
	if d < 0 || d == NotOver {
		return "∞"
	}
	return fmt.Sprint(d.Round(time.Millisecond).Milliseconds())
}

// Ratio is a ÷ b, formatted as "5.0×"; "–" when either is unknown or b
// is 0.
func Ratio(a, b time.Duration) string {
	if a == NotOver || b == NotOver || b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f×", float64(a)/float64(b))
}

// MedianGap is the median of write gaps, NotOver if the middle one is.
func MedianGap(v []time.Duration) time.Duration {
	if Percentile(v, 50) == NotOver {
		return NotOver
	}
	return Median(v)
}

// Plural is one when n is 1, else many.
func Plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
