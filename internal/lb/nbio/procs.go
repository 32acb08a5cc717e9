package nbio

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// A loop that waits in its own system call, raw (EpollWait with raw, and
// package relay's io_uring_enter), keeps its processor while it waits: to
// the scheduler it is a goroutine that computes. So that the rest of the
// process keeps its processors, such loops reserve one each, which
// raises GOMAXPROCS; the other event loops size themselves on the rest.

// BusyWait bounds such a loop's raw wait. A goroutine in a raw call is
// running as far as the runtime knows, so its monitor preempts it every
// 10 ms (a signal, and the loop's thread handing its processor round and
// back): nothing next to the requests of a busy loop, but 300 context
// switches a second and 0.75% of a core for one with nothing to do. A loop
// whose raw wait found nothing in BusyWait waits otherwise until work
// comes.
const BusyWait = 10 * time.Millisecond

var (
	reserveMu sync.Mutex // serialises the changes of GOMAXPROCS
	reserved  atomic.Int32
)

// ReserveProcs raises GOMAXPROCS by n for n loops that hold a processor
// each. release gives them back (once; later calls do nothing).
func ReserveProcs(n int) (release func()) {
	reserveMu.Lock()
	defer reserveMu.Unlock()
	reserved.Add(int32(n))
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + n)
	var once sync.Once
	return func() {
		once.Do(func() {
			reserveMu.Lock()
			defer reserveMu.Unlock()
			runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0)-n, 1))
			reserved.Add(-int32(n))
		})
	}
}

// ReservedProcs is how many of GOMAXPROCS loops hold for themselves.
func ReservedProcs() int { return int(reserved.Load()) }

// Procs is how many processors the process has for event loops that do
// not reserve one: GOMAXPROCS less those reserved, at least one.
func Procs() int { return max(runtime.GOMAXPROCS(0)-ReservedProcs(), 1) }
