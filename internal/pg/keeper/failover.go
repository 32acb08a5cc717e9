package keeper

import (
	"fmt"
	"slices"
	"strings"
)

// failoverPolicy is what decides which replica may be promoted.
type failoverPolicy struct {
	mode Mode
	// maxLag is the most WAL, in bytes, that a replica may lack behind the
	// last primary position it saw and still be promoted in async mode.
	maxLag uint64
}

// promotable says whether self may be promoted now, and if not, why. It
// sees the states the other keepers published (members, self excluded or
// not), the leader's sync record and the last state the primary published
// (its timeline and position; zero if never seen). The rules, in order:
//   - postgres runs as a replica of the cluster's database (same system
//     identifier), and the node is not tagged nofailover;
//   - it is on the last primary's timeline or a later one (replicas on an
//     older timeline are left out of every comparison too);
//   - async: it lacks at most maxLag bytes behind primaryLSN;
//   - sync and strict: it is one of the sync record's standbys, and enough
//     of them are visible that at least one has every acknowledged commit
//     (len(Standbys)-K+1);
//   - no visible replica that could be promoted under these rules has
//     received more WAL. Replicas level with each other are all promotable;
//     the ownership record's priority picks among them.
func promotable(self MemberState, members map[string]MemberState, sync SyncState, primary MemberState, p failoverPolicy) (bool, string) {
	if why := unfit(self); why != "" {
		return false, why
	}
	// Positions on different timelines do not compare: a node still on
	// an older timeline than the last primary's has not followed it, and
	// lacks whatever it wrote, whatever its LSN says.
	if self.Timeline < primary.Timeline {
		return false, fmt.Sprintf("on timeline %d, behind the last primary's %d: it has not followed the primary", self.Timeline, primary.Timeline)
	}
	primaryLSN := primary.LSN
	syncSet := p.mode != ModeAsync && sync.K > 0
	if !syncSet && primaryLSN > self.LSN && uint64(primaryLSN-self.LSN) > p.maxLag {
		return false, fmt.Sprintf("%d bytes behind the primary's last position %s, more than max_lag_on_failover (%d)",
			primaryLSN-self.LSN, primaryLSN, p.maxLag)
	}
	if syncSet {
		if !slices.Contains(sync.Standbys, self.Node) {
			return false, fmt.Sprintf("not a synchronous standby (those are %s)", strings.Join(sync.Standbys, ", "))
		}
		visible := 0
		for _, n := range sync.Standbys {
			if m, ok := members[n]; ok && (n == self.Node || unfit(m) == "" && m.SystemID == self.SystemID && m.Timeline >= primary.Timeline) {
				visible++
			}
		}
		if n := len(sync.Standbys) - sync.K + 1; visible < n {
			return false, fmt.Sprintf("only %d of the synchronous standbys (%s) are visible; %d are needed to be sure of every acknowledged commit",
				visible, strings.Join(sync.Standbys, ", "), n)
		}
	}
	for _, m := range members {
		if m.Node == self.Node || unfit(m) != "" || m.SystemID != self.SystemID || m.Timeline < primary.Timeline {
			continue
		}
		if syncSet && !slices.Contains(sync.Standbys, m.Node) {
			continue
		}
		if m.LSN > self.LSN {
			return false, fmt.Sprintf("%s has received more WAL (%s, this node %s)", m.Node, m.LSN, self.LSN)
		}
	}
	return true, ""
}

// unfit says why m cannot be promoted whatever the others' positions, or "".
func unfit(m MemberState) string {
	switch {
	case m.NoFailover:
		return "tagged nofailover"
	case m.Role != RoleReplica:
		return "postgres is " + m.Role + ", not a running replica"
	case m.SystemID == 0 || m.LSN == 0:
		return "no position known yet"
	}
	return ""
}
