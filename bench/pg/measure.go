package main

import (
	"github.com/haven-ha/haven/internal/drill/pgwrite"
)

// The writer and its bookkeeping live in internal/drill/pgwrite, shared
// with bench/dr; these are the names this harness knows them by.
type (
	write      = pgwrite.Write
	lossReport = pgwrite.LossReport
)

const (
	acked         = pgwrite.Acked
	failed        = pgwrite.Failed
	indeterminate = pgwrite.Indeterminate
	never         = pgwrite.Never
)

var (
	runWriter  = pgwrite.Run
	gapAround  = pgwrite.GapAround
	longestGap = pgwrite.LongestGap
	tally      = pgwrite.Tally
	compare    = pgwrite.Compare
	readRows   = pgwrite.ReadRows
	errorKinds = pgwrite.ErrorKinds
)
