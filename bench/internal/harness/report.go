package harness

import "strings"

// Header is the top of a report: the title, how the harness ran (run,
// marked QUICK for a quick run), and the machine and the versions, each a
// list of lines such as Machine returns.
func Header(title, run string, quick bool, machine, versions []string) string {
	if quick {
		run = "QUICK (development) — " + run
	}
	return "# " + title + "\n\n" +
		"Run: " + run + ".\n\n" +
		"Machine: " + strings.Join(machine, "; ") + ".\n\n" +
		"Versions: " + strings.Join(versions, "; ") + ".\n\n"
}

// Column is one column of a Table: its heading, and whether its cells are
// aligned right, as numbers are.
type Column struct {
	Name  string
	Right bool
}

// Left is a column aligned left.
func Left(name string) Column { return Column{Name: name} }

// Right is a column aligned right.
func Right(name string) Column { return Column{Name: name, Right: true} }

// Table writes a markdown table into a strings.Builder, a row at a time.
type Table struct {
	sb   *strings.Builder
	cols int
}

// NewTable writes the heading row and the alignment row of a table of
// cols into sb.
func NewTable(sb *strings.Builder, cols ...Column) *Table {
	var names, rule []string
	for _, c := range cols {
		names = append(names, c.Name)
		if c.Right {
			rule = append(rule, "---:")
		} else {
			rule = append(rule, "---")
		}
	}
	sb.WriteString("| " + strings.Join(names, " | ") + " |\n")
	sb.WriteString("|" + strings.Join(rule, "|") + "|\n")
	return &Table{sb: sb, cols: len(cols)}
}

// Row writes one row of cells, one for each column. In every cell of a
// Table, | is escaped and a line break becomes a space.
func (t *Table) Row(cells ...string) {
	esc := make([]string, len(cells))
	for i, c := range cells {
		esc[i] = cell(c)
	}
	t.sb.WriteString("| " + strings.Join(esc, " | ") + " |\n")
}

// Partial writes a row of which only the first cells and the last are
// known, such as a target that did not run: lead fills the first columns
// and last the last one, and the columns between stay blank.
func (t *Table) Partial(lead []string, last string) {
	t.sb.WriteString("|")
	for _, c := range lead {
		t.sb.WriteString(" " + cell(c) + " |")
	}
	t.sb.WriteString(strings.Repeat(" |", max(0, t.cols-len(lead)-1)))
	if last != "" {
		t.sb.WriteString(" " + cell(last))
	}
	t.sb.WriteString(" |\n")
}

// cell makes s safe inside a markdown table cell: it escapes | and puts
// line breaks on one line.
func cell(s string) string {
	return strings.NewReplacer("|", "\\|", "\n", " ").Replace(s)
}

// Truncate returns the first n bytes of s, followed by "…" when that cut
// anything off.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
