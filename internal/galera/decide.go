package galera

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Server states a member publishes.
const (
	ServerStopped  = "stopped"
	ServerStarting = "starting" // running, not answering yet (a state transfer, crash recovery)
	ServerRunning  = "running"
)

// MemberState is what each node's agent publishes of its server, on a
// lease: every agent decides from the others' whether to join, wait or
// bootstrap, and the routers route by it.
type MemberState struct {
	Node string `json:"node"`
	// Host and Port are where clients reach the server.
	Host string `json:"host"`
	Port int    `json:"port"`
	// Server is stopped, starting or running.
	Server string `json:"server"`
	// Status is the running server's wsrep state (zero otherwise).
	Status Status `json:"status"`
	// Serving says whether the node takes clients now; Why says why not.
	Serving bool   `json:"serving"`
	Why     string `json:"why,omitempty"`
	// Position is where the node's data stands: grastate.dat or InnoDB's
	// recovery when stopped, the last committed write set when running.
	// PositionKnown is false while it has not been read, or could not be.
	Position      Position `json:"position"`
	PositionKnown bool     `json:"position_known"`
	// NonPrimaryFor is how long a running server has been outside a
	// primary component.
	NonPrimaryFor time.Duration `json:"non_primary_for,omitempty"`
	// Plan is what the node's agent waits for or does next, for status.
	Plan string `json:"plan,omitempty"`
}

// inPrimary reports whether m's server is in a primary component.
func (m MemberState) inPrimary() bool { return m.Server == ServerRunning && m.Status.Primary() }

// leftGroup reports whether m's running server is no longer connected to
// the group at all (replication stopped: wsrep_connected OFF, which
// MariaDB sets with wsrep_cluster_status Disconnected): not a partitioned
// node, which stays connected and rejoins when the network heals. A
// server whose incremental state transfer missed write sets ("IST didn't
// contain all write sets ... node restart required") closes its group
// connection too but still says it is connected, joining for ever: outOf
// finds that one.
func (m MemberState) leftGroup() bool { return !m.Status.Connected }

// leftOutAfter, in graces, is how long a running server outside the
// primary component that does not list it is left to Galera before it is
// restarted: a partition heals, or a view is installed, well within it.
const leftOutAfter = 3

// outOf reports whether p, a member in a primary component, lists m's
// server among its component's (wsrep_incoming_addresses); false when p
// lists none. A joiner in a state transfer is listed; a server whose
// transfer failed half way is not.
func (m MemberState) outOf(p MemberState) bool {
	if len(p.Status.IncomingAddresses) == 0 || m.Host == "" {
		return false
	}
	return !slices.Contains(p.Status.IncomingAddresses, net.JoinHostPort(m.Host, strconv.Itoa(m.Port)))
}

// stuck says whether me, running outside the primary component that n
// (as m) is in, is to be restarted rather than left to Galera, and why.
func stuck(me MemberState, n string, m MemberState, grace time.Duration) (Decision, bool) {
	switch {
	case me.Server != ServerRunning:
	case me.leftGroup() && me.NonPrimaryFor >= grace:
		return Decision{Restart, fmt.Sprintf("the server left the group %s ago (wsrep_connected OFF) and Galera does not take it back; %s is in a primary component",
			me.NonPrimaryFor.Round(time.Second), n)}, true
	case me.outOf(m) && me.NonPrimaryFor >= leftOutAfter*grace:
		return Decision{Restart, fmt.Sprintf("the server has been outside a primary component for %s and %s's does not list it (%s): it is not joining but stuck (a state transfer that failed half way leaves mariadbd so, \"node restart required\")",
			me.NonPrimaryFor.Round(time.Second), n, me.Status.LocalStateComment)}, true
	}
	return Decision{}, false
}

// Action is what a node's agent does about its server.
type Action int

const (
	// Wait: nothing now; Decision.Reason says what for.
	Wait Action = iota
	// Join: start the server; it joins the primary component.
	Join
	// Bootstrap: start the server as a new primary component from this
	// node's data (--wsrep-new-cluster).
	Bootstrap
	// Promote: the running server, outside any primary component, makes
	// its own component primary (pc.bootstrap), the others having none.
	Promote
	// Restart: stop the running server, which left the group for good,
	// so that it starts again and joins (Join, once stopped).
	Restart
)

func (a Action) String() string {
	return [...]string{"wait", "join", "bootstrap", "promote", "restart"}[a]
}

// Decision is an Action and why.
type Decision struct {
	Action Action
	Reason string
}

// BootstrapRecord is the claim, in etcd, of the node that bootstraps now;
// it lives on the claimant's lease and is deleted once a primary
// component exists.
type BootstrapRecord struct {
	Node string `json:"node"`
	// Position is the claimant's when it claimed.
	Position Position  `json:"position"`
	At       time.Time `json:"at"`
	// Forced: an operator named the node (haven db bootstrap), without
	// every node's position.
	Forced bool `json:"forced,omitempty"`
}

// decide is what node self does about its server, given every node of
// the cluster (in haven.yaml's order), the members' published states
// (self's included) and the bootstrap claim, if any (claim.Node ""
// when none). grace is how long a running server must have been outside
// a primary component before the cluster counts as down: a partition
// being healed or a view being installed must not be bootstrapped over.
//
// The rule that makes it safe: a node bootstraps only when no member is in
// a primary component, every node's position is known, all positions are
// of one history, and it has the highest seqno (ties: safe_to_bootstrap,
// then the order of the nodes); and only while it holds the claim, which
// one node at a time can hold. Galera commits a write set on every node of
// the primary component before acknowledging it, so the most advanced
// node has every acknowledged write.
func decide(self string, nodes []string, members map[string]MemberState, claim BootstrapRecord, grace time.Duration) Decision {
	me := members[self]
	if me.inPrimary() {
		// Before the others: a node in the component is not one that
		// waits for Galera to take it back (its status said so once, and
		// sent a failing test's reader after the wrong node).
		return Decision{Wait, "in a primary component"}
	}
	for _, n := range nodes {
		m, ok := members[n]
		if !ok || n == self || !m.inPrimary() {
			continue
		}
		if me.Server != ServerStopped {
			if d, ok := stuck(me, n, m, grace); ok {
				return d
			}
			return Decision{Wait, "running; " + n + " is in a primary component: Galera rejoins this node when it reaches it"}
		}
		if u := me.Position.UUID; u != "" && m.Status.StateUUID != "" && u != m.Status.StateUUID {
			// Joining would replace this node's data by a full copy of
			// the running cluster's: a person decides.
			return Decision{Wait, fmt.Sprintf("%s is in a primary component of another history (%s) than this node's data (%s): to join it and discard this node's data, remove grastate.dat from the data directory",
				n, m.Status.StateUUID, me.Position)}
		}
		return Decision{Join, n + " is in a primary component"}
	}
	if claim.Node != "" {
		if claim.Node == self {
			if me.Server == ServerStopped {
				return Decision{Bootstrap, "holds the bootstrap claim"}
			}
			return Decision{Promote, "holds the bootstrap claim"}
		}
		return Decision{Wait, claim.Node + " is bootstrapping the cluster"}
	}
	var missing, unknown, starting, recent []string
	for _, n := range nodes {
		m, ok := members[n]
		switch {
		case !ok:
			missing = append(missing, n)
		case m.Server == ServerStarting:
			starting = append(starting, n)
		case !m.PositionKnown:
			unknown = append(unknown, n)
		case m.Server == ServerRunning && m.NonPrimaryFor < grace:
			recent = append(recent, n)
		}
	}
	switch {
	case len(missing) > 0:
		return Decision{Wait, fmt.Sprintf("no primary component; waiting for %s, whose agent does not answer: the cluster bootstraps from the most advanced node and it may be that one (if it is gone for good: haven db bootstrap NODE)", strings.Join(missing, ", "))}
	case len(starting) > 0:
		return Decision{Wait, "no primary component; " + strings.Join(starting, ", ") + " starting"}
	case len(unknown) > 0:
		return Decision{Wait, fmt.Sprintf("no primary component; the position of %s is not known yet (or could not be read: see its agent's log)", strings.Join(unknown, ", "))}
	case len(recent) > 0:
		return Decision{Wait, fmt.Sprintf("no primary component; %s left one less than %s ago: a partition may be healing", strings.Join(recent, ", "), grace)}
	}
	best, why := mostAdvanced(nodes, members)
	switch {
	case best == "":
		return Decision{Wait, "no primary component; " + why}
	case best != self:
		return Decision{Wait, "no primary component; " + best + " bootstraps it: " + why}
	}
	// A running node outside a primary component may form one again with
	// the others when they reach each other (a majority of the last
	// one): a new cluster beside it would be a second one. So a stopped
	// node bootstraps only when every server is stopped, and a running
	// one makes its component primary only when every running server is
	// in that component.
	for _, n := range nodes {
		m := members[n]
		if n == self || m.Server == ServerStopped {
			continue
		}
		if me.Server == ServerStopped {
			return Decision{Wait, fmt.Sprintf("no primary component; %s is the most advanced, but %s's server runs (outside a primary component) and may form one with the others: stop it, or wait for Galera", self, n)}
		}
		if !slices.Contains(me.Status.IncomingAddresses, net.JoinHostPort(m.Host, strconv.Itoa(m.Port))) {
			return Decision{Wait, fmt.Sprintf("no primary component; %s is the most advanced, but %s's server runs outside its component and may form one with the others: stop it, or wait for Galera", self, n)}
		}
	}
	if me.Server == ServerStopped {
		return Decision{Bootstrap, why}
	}
	return Decision{Promote, why}
}

// mostAdvanced is the node to bootstrap from, and why: the highest seqno
// of the one history the nodes share (nodes with no history join it
// later); ties to a running server (it need not start), then to
// safe_to_bootstrap, then to the order of the nodes; every node new, the
// first node.
func mostAdvanced(nodes []string, members map[string]MemberState) (string, string) {
	var histories []string
	for _, n := range nodes {
		if u := members[n].Position.UUID; u != "" && !slices.Contains(histories, u) {
			histories = append(histories, u)
		}
	}
	switch len(histories) {
	case 0:
		return nodes[0], "a new cluster: the first of database.nodes starts it"
	case 1:
	default:
		var parts []string
		for _, n := range nodes {
			parts = append(parts, n+" "+members[n].Position.String())
		}
		return "", "the nodes' data are of different histories (" + strings.Join(parts, ", ") + "): choose the node to keep with haven db bootstrap NODE"
	}
	best := ""
	for _, n := range nodes {
		p := members[n].Position
		if p.UUID == "" {
			continue
		}
		if best == "" {
			best = n
			continue
		}
		b := members[best]
		if p.Seqno != b.Position.Seqno {
			if p.Seqno > b.Position.Seqno {
				best = n
			}
			continue
		}
		running, bestRunning := members[n].Server == ServerRunning, b.Server == ServerRunning
		if running != bestRunning {
			if running {
				best = n
			}
			continue
		}
		if p.SafeToBootstrap && !b.Position.SafeToBootstrap {
			best = n
		}
	}
	return best, fmt.Sprintf("%s is the most advanced (seqno %d)", best, members[best].Position.Seqno)
}
