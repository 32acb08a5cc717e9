package galera

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// zeroUUID is the state UUID of a node that has no history yet.
const zeroUUID = "00000000-0000-0000-0000-000000000000"

// Position is where a node's data stands in the cluster's history: the
// cluster's state UUID (one per history: a bootstrap from scratch starts a
// new one, a bootstrap from a node's data keeps it) and the sequence
// number of the last write set it committed.
type Position struct {
	// UUID is the state UUID; "" when the node has none (new, or its
	// data was never part of a cluster).
	UUID string `json:"uuid,omitempty"`
	// Seqno is the last committed write set; -1 when unknown.
	Seqno int64 `json:"seqno"`
	// SafeToBootstrap is grastate.dat's flag: the node left a primary
	// component last, cleanly, so it has every write set that component
	// committed.
	SafeToBootstrap bool `json:"safe_to_bootstrap,omitempty"`
}

// None reports whether p places the node in no history.
func (p Position) None() bool { return p.UUID == "" }

func (p Position) String() string {
	if p.None() {
		return "none"
	}
	return fmt.Sprintf("%s:%d", p.UUID, p.Seqno)
}

// grastateFile is Galera's saved state, in the data directory. The server
// rewrites it on a clean shutdown (seqno set) and at start (seqno -1 while
// it runs): a seqno of -1 in a stopped node's file means it did not stop
// cleanly, and InnoDB's recovery (--wsrep-recover) knows the position.
const grastateFile = "grastate.dat"

// readGrastate reads dir's grastate.dat. A missing file is no position
// (ok false): the node was never part of a cluster.
func readGrastate(dir string) (p Position, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, grastateFile))
	if errors.Is(err, os.ErrNotExist) {
		return Position{Seqno: -1}, false, nil
	}
	if err != nil {
		return Position{}, false, err
	}
	p, err = parseGrastate(b)
	return p, err == nil, err
}

func parseGrastate(b []byte) (Position, error) {
	p := Position{Seqno: -1}
	var seen bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.HasPrefix(key, "#") {
			continue
		}
		val = strings.TrimSpace(val)
		switch strings.TrimSpace(key) {
		case "uuid":
			p.UUID, seen = val, true
		case "seqno":
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return Position{}, fmt.Errorf("grastate.dat: seqno %q is not a number", val)
			}
			p.Seqno = n
		case "safe_to_bootstrap":
			p.SafeToBootstrap = val == "1"
		}
	}
	if !seen {
		return Position{}, errors.New("grastate.dat: no uuid line")
	}
	if p.UUID == zeroUUID {
		p.UUID = ""
	}
	return p, nil
}

// markSafeToBootstrap sets safe_to_bootstrap: 1 in dir's grastate.dat, as
// Galera requires of the node it bootstraps from (it refuses otherwise,
// to keep a person from bootstrapping a node that may lack commits: haven
// has checked that this one has them all). The file is replaced whole.
func markSafeToBootstrap(dir string) error {
	path := filepath.Join(dir, grastateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a new node: --wsrep-new-cluster needs no flag
	}
	if err != nil {
		return err
	}
	var out []string
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "safe_to_bootstrap:") {
			line, found = "safe_to_bootstrap: 1", true
		}
		out = append(out, line)
	}
	if !found {
		out = append(out, "safe_to_bootstrap: 1")
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp := path + ".haven"
	if err := os.WriteFile(tmp, []byte(strings.Join(out, "\n")), st.Mode().Perm()); err != nil {
		return err
	}
	if err := chownLike(tmp, st); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// recoveredPosition matches the line `mariadbd --wsrep-recover` logs with
// the position InnoDB recovered.
var recoveredPosition = regexp.MustCompile(`WSREP: Recovered position:\s+([0-9a-f-]{36}):(-?\d+)`)

// parseRecovered returns the last position a --wsrep-recover run logged.
func parseRecovered(log []byte) (Position, bool) {
	m := recoveredPosition.FindAllSubmatch(log, -1)
	if len(m) == 0 {
		return Position{}, false
	}
	last := m[len(m)-1]
	seqno, err := strconv.ParseInt(string(last[2]), 10, 64)
	if err != nil {
		return Position{}, false
	}
	p := Position{UUID: string(last[1]), Seqno: seqno}
	if p.UUID == zeroUUID {
		p.UUID = ""
	}
	return p, true
}
