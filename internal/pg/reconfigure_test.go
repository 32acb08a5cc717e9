package pg

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestReconfigure changes a running server's settings without restarting
// it: a reload-level setting (work_mem) takes effect at once; a
// restart-level one (max_connections) is reported pending until the next
// start, which applies it; a setting haven manages is refused and changes
// nothing.
func TestReconfigure(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.Settings = map[string]string{"work_mem": "4MB"} })
	s.initStart(t)
	pid := s.PID()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	settings := map[string]string{"dynamic_shared_memory_type": "mmap", "work_mem": "8MB", "max_connections": "57"}
	got, err := s.Reconfigure(ctx, settings, []string{"host all all 127.0.0.1/32 trust"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Changed, []string{"max_connections", "work_mem"}) || !slices.Equal(got.Pending, []string{"max_connections"}) || !slices.Equal(got.Lowered, []string{"max_connections"}) {
		t.Errorf("Reconfigure: %+v; want changed [max_connections work_mem], pending and lowered [max_connections] (57 < 100)", got)
	}
	if got := s.queryString(t, "SHOW work_mem"); got != "8MB" {
		t.Errorf("work_mem is %s after the reload; want 8MB", got)
	}
	if got := s.queryString(t, "SHOW max_connections"); got == "57" || s.PID() != pid {
		t.Errorf("max_connections is %s (pid %d, was %d): applied without a restart?", got, s.PID(), pid)
	}

	if _, err := s.Reconfigure(ctx, map[string]string{"port": "1"}, nil); err == nil {
		t.Error("Reconfigure accepted port, which haven manages")
	}
	// Values PostgreSQL would refuse at its next start are refused now,
	// and the files keep the values that work.
	for _, bad := range []map[string]string{
		{"dynamic_shared_memory_type": "mmap", "work_mem": "lots", "max_connections": "57"},
		{"dynamic_shared_memory_type": "mmap", "work_mem": "8MB", "max_connections": "57", "no_such_parameter": "1"},
	} {
		if _, err := s.Reconfigure(ctx, bad, nil); err == nil || !strings.Contains(err.Error(), "PostgreSQL refuses the settings") {
			t.Errorf("Reconfigure(%v) = %v; want PostgreSQL's refusal", bad, err)
		}
		conf, _ := os.ReadFile(filepath.Join(s.DataDir(), HavenConf))
		if strings.Contains(string(conf), "'lots'") || strings.Contains(string(conf), "no_such_parameter") {
			t.Errorf("haven.conf keeps a refused setting:\n%s", conf)
		}
	}
	if got := s.queryString(t, "SHOW work_mem"); got != "8MB" {
		t.Errorf("work_mem is %s after a refused change; want 8MB still", got)
	}

	if err := s.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.queryString(t, "SHOW max_connections"); got != "57" {
		t.Errorf("max_connections is %s after the restart; want 57", got)
	}
	if p, err := s.PendingRestart(ctx); err != nil || len(p) != 0 {
		t.Errorf("pending after the restart: %v, %v; want none", p, err)
	}
	// Raised again: pending, not lowered (a standby may go first).
	settings["max_connections"] = "120"
	got, err = s.Reconfigure(ctx, settings, nil)
	if err != nil || !slices.Equal(got.Pending, []string{"max_connections"}) || len(got.Lowered) != 0 {
		t.Errorf("Reconfigure raising max_connections: %+v, %v; want it pending, not lowered", got, err)
	}
}
