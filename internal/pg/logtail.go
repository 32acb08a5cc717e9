package pg

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"sync"
)

// tailLines is how many of postgres's last log lines a Server keeps.
const tailLines = 100

// errorTailLines is how many of them go into an error message.
const errorTailLines = 20

// lineTail keeps the last lines written to it. It is safe for concurrent
// use.
type lineTail struct {
	mu    sync.Mutex
	lines []string // ring of at most tailLines
	next  int
}

// add keeps line.
func (t *lineTail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) < tailLines {
		t.lines = append(t.lines, line)
		return
	}
	t.lines[t.next] = line
	t.next = (t.next + 1) % tailLines
}

// last returns up to n of the last lines, oldest first.
func (t *lineTail) last(n int) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	all := append(append([]string(nil), t.lines[t.next:]...), t.lines[:t.next]...)
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return all
}

// copyLines copies r to w line by line, keeping each line in t, until r
// ends. A failing w does not stop the copy: the tail still matters. It
// returns the first error of w.
func copyLines(r io.Reader, w io.Writer, t *lineTail) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var werr error
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if _, e := w.Write(line); e != nil && werr == nil {
				werr = e
			}
			t.add(strings.TrimRight(string(bytes.TrimRight(line, "\n")), "\r"))
		}
		if err != nil {
			return werr
		}
	}
}

// formatTail formats the last lines prog logged for an error message.
func formatTail(prog string, lines []string) string {
	if len(lines) == 0 {
		return " (" + prog + " logged nothing)"
	}
	return "; its last log lines:\n    " + strings.Join(lines, "\n    ")
}

// lastLines returns the last n lines of a program's output.
func lastLines(out string, n int) []string {
	out = strings.TrimRight(out, "\n")
	if out == "" {
		return nil
	}
	lines := strings.Split(out, "\n")
	return lines[max(0, len(lines)-n):]
}
