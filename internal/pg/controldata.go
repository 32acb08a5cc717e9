package pg

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
)

// ControlData is what pg_controldata reads from a data directory's
// pg_control file. It works whether or not postgres runs, which is when the
// keeper needs it: to decide, before starting a stopped node, whether it can
// follow a new primary or must be rewound.
type ControlData struct {
	// SystemIdentifier is the cluster's system identifier.
	SystemIdentifier uint64
	// State is the cluster state: "in production", "shut down",
	// "shut down in recovery", "in crash recovery", "in archive recovery",
	// "shutting down".
	State string
	// Checkpoint is the location of the latest checkpoint.
	Checkpoint LSN
	// Redo is the REDO location of the latest checkpoint.
	Redo LSN
	// Timeline is the timeline of the latest checkpoint.
	Timeline uint32
	// MinRecoveryEnd is how far a replica must replay before it is
	// consistent (zero on a primary).
	MinRecoveryEnd LSN
	// MinRecoveryEndTimeline is the timeline of MinRecoveryEnd.
	MinRecoveryEndTimeline uint32
	// DataChecksums reports whether data page checksums are on.
	DataChecksums bool
	// WALLogHints is the wal_log_hints setting the server last ran with.
	WALLogHints bool
	// Fields holds every line of pg_controldata's output, by label.
	Fields map[string]string
}

// ControlData runs pg_controldata on the data directory.
func (s *Server) ControlData(ctx context.Context) (ControlData, error) {
	cmd := s.command(ctx, "pg_controldata", "-D", s.cfg.dataDir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return ControlData{}, fmt.Errorf("pg: control data %s: pg_controldata: %w: %s",
			s.cfg.dataDir, err, strings.TrimSpace(stderr.String()))
	}
	cd, err := ParseControlData(string(out))
	if err != nil {
		return ControlData{}, fmt.Errorf("pg: control data %s: %w", s.cfg.dataDir, err)
	}
	return cd, nil
}

// ParseControlData parses the output of pg_controldata run with LC_ALL=C.
// It needs the system identifier, the state, the latest checkpoint's
// location and timeline, and the checksum version; the other fields are
// optional.
func ParseControlData(out string) (ControlData, error) {
	cd := ControlData{Fields: make(map[string]string)}
	for _, line := range strings.Split(out, "\n") {
		label, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		cd.Fields[strings.TrimSpace(label)] = strings.TrimSpace(value)
	}
	var errs []string
	field := func(label string, required bool, parse func(string) error) {
		v, ok := cd.Fields[label]
		if !ok {
			if required {
				errs = append(errs, fmt.Sprintf("no %q", label))
			}
			return
		}
		if err := parse(v); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %q: %v", label, v, err))
		}
	}
	lsn := func(dst *LSN) func(string) error {
		return func(v string) (err error) { *dst, err = ParseLSN(v); return err }
	}
	u32 := func(dst *uint32) func(string) error {
		return func(v string) error {
			n, err := strconv.ParseUint(v, 10, 32)
			*dst = uint32(n)
			return err
		}
	}
	field("Database system identifier", true, func(v string) (err error) {
		cd.SystemIdentifier, err = strconv.ParseUint(v, 10, 64)
		return err
	})
	field("Database cluster state", true, func(v string) error {
		if v == "" {
			return fmt.Errorf("empty")
		}
		cd.State = v
		return nil
	})
	field("Latest checkpoint location", true, lsn(&cd.Checkpoint))
	field("Latest checkpoint's REDO location", false, lsn(&cd.Redo))
	field("Latest checkpoint's TimeLineID", true, u32(&cd.Timeline))
	field("Minimum recovery ending location", false, lsn(&cd.MinRecoveryEnd))
	field("Min recovery ending loc's timeline", false, u32(&cd.MinRecoveryEndTimeline))
	field("Data page checksum version", true, func(v string) error {
		var n uint32
		err := u32(&n)(v)
		cd.DataChecksums = n != 0
		return err
	})
	field("wal_log_hints setting", false, func(v string) error {
		cd.WALLogHints = v == "on"
		if v != "on" && v != "off" {
			return fmt.Errorf("not on or off")
		}
		return nil
	})
	if len(errs) > 0 {
		return ControlData{}, fmt.Errorf("pg_controldata output: %s", strings.Join(errs, "; "))
	}
	return cd, nil
}
