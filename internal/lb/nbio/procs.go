package nbio

import (
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A loop that waits in its own system call, raw (RawEpollWait, and
// package relay's io_uring_enter), keeps its processor while it waits: to
// the scheduler it is a goroutine that computes. So that the rest of the
// process keeps its processors, such loops reserve one each, which
// raises GOMAXPROCS; the other event loops size themselves on the rest.

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

// EpollWait waits up to msec milliseconds (-1: without end) for events in
// epfd's set. With raw, the thread keeps its processor while it waits (a
// loop that reserved one); otherwise the scheduler may hand the processor
// to another thread once the call has lasted a while.
func EpollWait(epfd int, events []unix.EpollEvent, msec int, raw bool) (int, error) {
	call := unix.Syscall6
	if raw {
		call = unix.RawSyscall6
	}
	n, _, e := call(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(msec), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
