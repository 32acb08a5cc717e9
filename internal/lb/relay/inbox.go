package relay

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// inbox is how other goroutines hand a loop new pairs, aborts and the
// stop: a list under a lock, and an eventfd the loop waits on, written
// when the list stops being empty.
type inbox struct {
	evfd     int
	mu       sync.Mutex
	incoming []*Pair // new pairs and aborts, for the loop to take
	stopped  bool
}

var one = []byte{1, 0, 0, 0, 0, 0, 0, 0}

// newEventfd is an inbox's eventfd.
func newEventfd() (int, error) {
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return -1, fmt.Errorf("relay: eventfd: %w", err)
	}
	return evfd, nil
}

// submit hands the loop a new pair, or an abort of one of its pairs. It
// reports false when the loop has stopped (its pairs were all aborted).
func (in *inbox) submit(p *Pair) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.stopped {
		return false
	}
	if len(in.incoming) == 0 {
		unix.Write(in.evfd, one) // under the lock: close closes evfd under it
	}
	in.incoming = append(in.incoming, p)
	return true
}

// signalStop tells the loop to stop.
func (in *inbox) signalStop() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.stopped {
		in.stopped = true
		unix.Write(in.evfd, one)
	}
}

// take returns what was handed in since the last take, and whether the
// loop is to stop.
func (in *inbox) take() ([]*Pair, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	ps := in.incoming
	in.incoming = nil
	return ps, in.stopped
}

// close closes the eventfd, once the loop has stopped, and returns what
// was handed in meanwhile: the loop aborts those.
func (in *inbox) close() []*Pair {
	in.mu.Lock()
	defer in.mu.Unlock()
	ps := in.incoming
	in.incoming = nil
	unix.Close(in.evfd) // under the lock: submit writes it under the lock, once stopped never
	return ps
}
