package drill

import (
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/drill/fault"
)

// Result is what a drill observed and its verdict: the faults it
// injected, what each workload's clients saw, per part, against the
// part's objectives, and the state changes on the way. Times in Events,
// Outcomes and Injected.At are offsets from Started, so that a report
// draws them on one axis.
type Result struct {
	Scenario string    `json:"scenario"`
	About    string    `json:"about"`
	Started  time.Time `json:"started"`
	// Length is how long the drill ran, from Started.
	Length time.Duration `json:"length_ns"`
	Faults []Injected    `json:"faults"`
	Parts  []PartResult  `json:"parts"`
	// Events are what happened to the deployment, in order: faults
	// injected and ended, the primary or a region changing.
	Events []Event `json:"events"`
	// Met is whether every part kept its objectives; Reasons gathers the
	// parts' reasons why not.
	Met     bool     `json:"met"`
	Reasons []string `json:"reasons,omitempty"`
}

// Injected is a fault a drill injected, on which node, and when.
type Injected struct {
	Node  string        `json:"node"`
	At    time.Duration `json:"at_ns"`
	Fault fault.Fault   `json:"fault"`
}

// PartResult is one workload's outcome, judged against one part's
// objectives.
type PartResult struct {
	// Part is the objectives' part (web, database, region); Workload says
	// what the client did ("HTTP GET http://198.18.0.100/", "writes
	// through the router").
	Part     string `json:"part"`
	Workload string `json:"workload"`
	// OK, Failed and Indeterminate count the client's operations
	// (Indeterminate: a write whose outcome the client could not know).
	OK            int `json:"ok"`
	Failed        int `json:"failed"`
	Indeterminate int `json:"indeterminate"`
	// Lost are acknowledged writes missing afterwards (their sequence
	// numbers); only a database workload loses writes.
	Lost []int `json:"lost,omitempty"`
	// RTO is the longest time without a successful operation from the
	// first fault on (Unbounded: none succeeded again before the drill
	// gave up); RPO is the data lost, as time: from the oldest lost
	// acknowledgement to the fault, or for a restore the data between the
	// last acknowledged write and the restored point.
	RTO       time.Duration `json:"rto_ns"`
	Unbounded bool          `json:"unbounded,omitempty"`
	RPO       time.Duration `json:"rpo_ns"`
	// ObjectiveRTO and ObjectiveRPO are the part's objectives (nil: none).
	ObjectiveRTO *time.Duration `json:"objective_rto_ns,omitempty"`
	ObjectiveRPO *time.Duration `json:"objective_rpo_ns,omitempty"`
	Met          bool           `json:"met"`
	Reasons      []string       `json:"reasons,omitempty"`
	// Outcomes are the client's operations in buckets of BucketWidth, from
	// Started: the timeline a report draws.
	Outcomes []Bucket `json:"outcomes"`
}

// LosesWrites says whether p's workload wrote to the database: only such
// a workload can lose acknowledged data, so only its RPO is observed.
func (p PartResult) LosesWrites() bool { return strings.HasPrefix(p.Workload, "database") }

// Bucket counts the operations that ended in [At, At+BucketWidth).
type Bucket struct {
	At     time.Duration `json:"at_ns"`
	OK     int           `json:"ok"`
	Failed int           `json:"failed"`
}

// BucketWidth is the width of an outcome bucket.
const BucketWidth = 250 * time.Millisecond

// Event is something that happened to the deployment during a drill.
type Event struct {
	At   time.Duration `json:"at_ns"`
	What string        `json:"what"`
}
