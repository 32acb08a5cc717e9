package fault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// systemctlTimeout bounds one systemctl call: a stop waits for the unit's
// processes to end (TimeoutStopSec, 90s by default).
const systemctlTimeout = 2 * time.Minute

// systemctl runs systemctl with args and returns its output, trimmed.
func systemctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), systemctlTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "systemctl", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			err = fmt.Errorf("%w: %s", err, msg)
		}
		return "", fmt.Errorf("systemctl %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// stop stops a named process's systemd unit and starts it again when the
// fault ends. A process known by its pid file alone is refused: nothing
// could start it again.
func (m *Manager) stop(spec Spec) (string, undoer, error) {
	name, _ := strings.CutPrefix(spec.Target, ProcessPrefix)
	p, err := m.process(name)
	if err != nil {
		return "", nil, err
	}
	if p.Unit == "" {
		return "", nil, fmt.Errorf("%s: give the process a unit (drills.processes.%s.unit): a pid file cannot be started again", spec.Target, name)
	}
	if _, err := systemctl("stop", p.Unit); err != nil {
		return "", nil, errors.Join(err, startUnit(p.Unit))
	}
	return "systemctl stop " + p.Unit, func() error { return startUnit(p.Unit) }, nil
}

func startUnit(unit string) error {
	_, err := systemctl("start", unit)
	return err
}
