// Package console renders the dashboard every agent serves on its admin
// port: one page, server-rendered, with a few lines of plain JavaScript
// that replace its sections when the agent's stream sends them again.
//
// The package renders; it does not gather. The agent builds a View from
// its own status and its peers' (internal/agent/console.go) and hands it
// here. So the page is HTML the server wrote, the stream carries the same
// HTML, and the script has nothing to compute: it swaps a section, adds a
// line to the timeline, and sends an operator's action after asking for a
// confirmation.
package console

import "time"

// View is the deployment as one node sees it at one moment.
type View struct {
	Cluster string
	// Node is the node that serves the page.
	Node string
	At   time.Time
	// Blind says what the page cannot see and why (nodes that do not
	// answer, no coordination): a view from one node must say so.
	Blind      []string
	Objectives *Objectives
	Regions    []Region
	VIPs       []VIP
	Balancers  []Balancer
	Database   *Database
	DNS        []DNSName
}

// Objectives is whether the deployment meets its recovery objectives now.
type Objectives struct {
	Met     bool
	Failing []string
	Unseen  []string
}

// Region is one region and its nodes.
type Region struct {
	Name string
	// Active is set for the active region of a database across regions.
	Active bool
	Nodes  []Node
}

// Node is one node as its agent answered.
type Node struct {
	Name, Zone, Address string
	// Self is the node serving the page.
	Self bool
	// Reachable is false when its agent did not answer: Error says why.
	Reachable bool
	Error     string
	Ready     bool
	NotReady  []string
	Version   string
	Roles     []string
	Started   time.Time
}

// VIP is a floating address.
type VIP struct {
	Name, Address string
	Holder        string // "" when nobody holds it
	Epoch         int64
	// Nodes are the candidates' own states (holder, backup, fault).
	Nodes []VIPNode
}

// VIPNode is one candidate's state.
type VIPNode struct {
	Node, State, Error string
}

// Balancer is one balancer on each of its nodes.
type Balancer struct {
	Name, Mode, Listen string
	Nodes              []BalancerNode
}

// BalancerNode is a balancer as one node runs it.
type BalancerNode struct {
	Node      string
	Reachable bool
	Ready     bool
	NotReady  string
	Clients   int64
	Backends  []Backend
}

// Backend is one backend as one balancer node sees it.
type Backend struct {
	Name, Address string
	Health        string // up, down, unknown
	Since         time.Time
	Reason        string // the last failing probe, when down
	Admin         string // ready, drain, maint
	Weight        int
	Inflight      int64
	// Rate is requests per second since the previous view (-1: unknown).
	Rate float64
}

// Database is the PostgreSQL cluster.
type Database struct {
	Primary string // "" when none
	Epoch   int64
	Paused  string // who paused it and why; "" when not paused
	// Sync describes the synchronous standbys ("2 of db2, db3", "async").
	Sync    string
	Members []DBMember
	// Backup: the newest base backup and the WAL archive's lag.
	LastBackup     time.Time
	LastBackupKind string
	ArchiveLag     string
	// Seen is false when no database node answered.
	Seen bool
}

// DBMember is one database node.
type DBMember struct {
	Node, Role string
	// Gone is set when the node's agent does not answer: Role is the
	// last it published.
	Gone       bool
	Timeline   uint32
	Streaming  bool
	LagBytes   uint64
	LagSeconds float64
	// Sync is set for a synchronous standby.
	Sync           bool
	NotPromotable  string
	PendingRestart []string
}

// DNSName is a managed name as one name server answers it.
type DNSName struct {
	// Name is the fully qualified name; Record the record's name as
	// traffic.records spells it (what the drain call takes).
	Name, Record, Policy string
	// Server is the name server that answered.
	Server  string
	Answers []string
	// AllDown: no target is up; the name answers its all-down answer.
	AllDown bool
	Targets []DNSTarget
}

// DNSTarget is one target of a name.
type DNSTarget struct {
	Name, Address string
	Up, Drained   bool
}
