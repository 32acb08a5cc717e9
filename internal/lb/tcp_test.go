package lb

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/lb/relay"
)

// TCP mode relays on io_uring, falls back to epoll where the kernel
// refuses io_uring (a kernel before 6.1 refuses its flags), and to
// goroutines where neither starts; each fallback is logged with its
// reason, and HAVEN_TCP_RELAY picks one outright. The switch runs once
// per process, so the agent's own start shows only one branch of it.
func TestChooseRelays(t *testing.T) {
	ring, epoll := new(relay.Loops), new(relay.Loops)
	refused := errors.New("io_uring_setup: invalid argument")
	for _, tt := range []struct {
		name             string
		choice           string
		ringErr, epErr   error
		want             *relay.Loops
		kind, log, tried string
	}{
		{"default", "", nil, nil, ring, "io_uring", "relaying on io_uring loops", "ring"},
		{"io_uring refused", "", refused, nil, epoll, "epoll", "io_uring loops unavailable: relaying on epoll loops", "ring epoll"},
		{"both refused", "", refused, refused, nil, "goroutines", "could not start: relaying with goroutines", "ring epoll"},
		{"epoll asked", "epoll", nil, nil, epoll, "epoll", "", "epoll"},
		{"goroutines asked", "goroutines", nil, nil, nil, "goroutines", "HAVEN_TCP_RELAY=goroutines", ""},
		{"unknown value", "uring", nil, nil, ring, "io_uring", "neither epoll nor goroutines", "ring"},
	} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		var tried []string
		newRing := func(int) (*relay.Loops, error) { tried = append(tried, "ring"); return ring, tt.ringErr }
		newEpoll := func(int) (*relay.Loops, error) { tried = append(tried, "epoll"); return epoll, tt.epErr }
		got, kind := chooseRelays(tt.choice, newRing, newEpoll, log)
		if tt.want == nil && got != nil || tt.want != nil && got != tt.want || kind != tt.kind {
			t.Errorf("%s: relays %p (%s), want %p (%s)", tt.name, got, kind, tt.want, tt.kind)
		}
		if s := strings.Join(tried, " "); s != tt.tried {
			t.Errorf("%s: started %q, want %q", tt.name, s, tt.tried)
		}
		if !strings.Contains(buf.String(), tt.log) {
			t.Errorf("%s: log %q does not say %q", tt.name, buf.String(), tt.log)
		}
		if tt.ringErr != nil && !strings.Contains(buf.String(), refused.Error()) {
			t.Errorf("%s: log %q does not give the kernel's refusal", tt.name, buf.String())
		}
	}
}
