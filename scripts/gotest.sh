#!/usr/bin/env bash
# gotest.sh LOG COMMAND...: runs a go test command, its output both shown and
# appended to LOG, and when it fails prints at the end which tests failed and
# their first words. A CI page that shows the start and the end of a long run
# hides the middle, where a package's failure (and the processes' logs
# printed with it) can push every other failure out of sight.
set -uo pipefail
log=$1; shift
start=$(wc -l < "$log" 2>/dev/null || echo 0)
"$@" 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
  echo
  echo "== the failures above, in short (the whole output is in $log):"
  # A failing test's line, and the first line of each of its messages
  # written from a _test.go file (not the processes' logs, which testnet
  # and the helpers print from other files).
  tail -n +"$((start + 1))" "$log" |
    grep -E '^\s*--- FAIL|^\s+[A-Za-z0-9_]+_test\.go:[0-9]+: |^(FAIL|panic:)' |
    grep -v -E '^FAIL$' | cut -c1-400 | head -n 80
fi
exit "$status"
