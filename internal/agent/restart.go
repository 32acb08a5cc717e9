package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/web"
)

// ErrRestart is what Run returns after an admin call asked the agent to
// restart: it stopped its roles as on SIGTERM (a primary hands over, the
// floating addresses are released), and its caller executes the binary
// again in the same process (haven agent does), so that an upgraded
// binary takes over where the old one was, under the same pid and the
// same systemd unit.
var ErrRestart = errors.New("agent: restart requested through the admin API")

// restartCheckTimeout bounds the check of the binary that will run next.
const restartCheckTimeout = 30 * time.Second

// RestartPlan is the answer to POST /api/v1/agent/restart.
type RestartPlan struct {
	Node string `json:"node"`
	PID  int    `json:"pid"`
	// Executable is the binary that runs next: the one now at the path
	// this one was started from, an upgraded one if a package replaced it.
	Executable string `json:"executable"`
	// Version is what runs now, Next what Executable says it is.
	Version string `json:"version"`
	Next    string `json:"next"`
	// Started is when the running agent started: the restarted one
	// answers with a later one.
	Started time.Time `json:"started"`
}

// restart serves POST /api/v1/agent/restart: it checks that the binary
// now at the agent's path accepts the configuration for this node (as
// the unit's ExecStartPre does), answers, and then stops the agent to be
// executed again. A binary that rejects the file restarts nothing.
func (a *Agent) restart(w http.ResponseWriter, r *http.Request) {
	exe, err := os.Executable()
	if err != nil {
		web.WriteError(w, http.StatusInternalServerError, fmt.Errorf("find the agent's binary: %w", err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), restartCheckTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, exe, "check", "-c", a.opt.ConfigPath, "-n", a.opt.Node).CombinedOutput(); err != nil {
		web.WriteError(w, http.StatusConflict, fmt.Errorf("%s check -c %s -n %s failed (%w); nothing was restarted:\n%s",
			exe, a.opt.ConfigPath, a.opt.Node, err, strings.TrimSpace(string(out))))
		return
	}
	next, err := exec.CommandContext(ctx, exe, "version").Output()
	if err != nil {
		web.WriteError(w, http.StatusConflict, fmt.Errorf("%s version: %w; nothing was restarted", exe, err))
		return
	}
	if !a.restarting.CompareAndSwap(false, true) {
		web.WriteError(w, http.StatusConflict, errors.New("a restart is already under way"))
		return
	}
	a.restartc <- struct{}{} // buffered, and sent once: never blocks
	plan := RestartPlan{Node: a.opt.Node, PID: os.Getpid(), Executable: exe, Version: a.opt.Version,
		Next: strings.TrimPrefix(strings.TrimSpace(string(next)), "haven "), Started: a.started}
	a.log.Warn("restart requested through the admin API: stopping, then executing the binary again", "event", "agent",
		"operator", r.Header.Get("X-Haven-Operator"), "executable", exe, "version", plan.Version, "next", plan.Next)
	web.WriteJSON(w, http.StatusAccepted, plan)
}
