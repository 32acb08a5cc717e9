// Package nbio makes the system calls of haven's event loops (package
// relay, and the balancer's HTTP loops) on non-blocking sockets, without
// telling Go's scheduler.
//
// golang.org/x/sys/unix enters and leaves the scheduler's "in a system
// call" state around each call, so that a blocking call does not hold its
// processor. An event loop makes hundreds of thousands of calls a second
// that never block but, on loopback, can take tens of microseconds (a
// write carries the receiver's TCP processing). The runtime's monitor
// then often finds the loop's processor in a call twice in a row, takes
// it away, and hands it to another thread; the loop moves between threads,
// and the monitor, never idle, keeps waking every 20 µs. Measured on
// connection-close load with one core: a fifth of haven's CPU went to the
// monitor and the hand-offs. The calls here are raw: the processor stays
// with the loop, as it does for a goroutine that computes.
//
// Only calls that cannot block belong here: reads and writes of
// non-blocking sockets (sockets only: they are recv and send), accept4 on
// a non-blocking listener, connect that returns EINPROGRESS, epoll_wait
// with a zero timeout, epoll_ctl, close of a socket without SO_LINGER.
// The one exception is a loop's wait (EpollWait), raw only for a loop that
// reserved a processor of its own (ReserveProcs).
package nbio

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// Read reads from socket fd into p. It is recv(2), which for a socket
// is read(2) without the file layer read(2) goes through first.
func Read(fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(ptr), uintptr(len(p)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// Write writes p to socket fd. It is send(2) (write(2) without the file
// layer), and a peer gone yields EPIPE without a SIGPIPE.
func Write(fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(ptr), uintptr(len(p)), unix.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// WriteSome writes p to fd and returns how much the socket took: a short
// count, and no error, when its buffer filled (EAGAIN).
func WriteSome(fd int, p []byte) (int, error) {
	for {
		n, err := Write(fd, p)
		switch err {
		case nil:
			return n, nil
		case unix.EAGAIN:
			return 0, nil
		case unix.EINTR:
			continue
		}
		return 0, err
	}
}

// Close closes fd.
func Close(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
	return errnoErr(e)
}

// Shutdown shuts down part of a full-duplex connection.
func Shutdown(fd, how int) error {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0)
	return errnoErr(e)
}

// Accept4 accepts a connection from a non-blocking listener, non-blocking
// and close-on-exec, with its peer's address in rsa.
func Accept4(lnfd int, rsa *unix.RawSockaddrAny) (int, error) {
	n := uint32(unix.SizeofSockaddrAny)
	fd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lnfd), uintptr(unsafe.Pointer(rsa)), uintptr(unsafe.Pointer(&n)),
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// EpollPoll returns the events ready in epfd's set, without waiting.
func EpollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	return EpollWait(epfd, events, 0, true)
}

// EpollWait waits up to msec milliseconds (-1: without end) for events in
// epfd's set. With raw, the thread keeps its processor while it waits (a
// loop that reserved one: ReserveProcs); otherwise the scheduler may hand
// the processor to another thread once the call has lasted a while.
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

// EpollCtl changes epfd's set.
func EpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return errnoErr(e)
}

// SocketError is a socket's pending error (SO_ERROR): how a non-blocking
// connect ended.
func SocketError(fd int) error {
	var v int32
	l := uint32(4)
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_ERROR,
		uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	return errnoErr(unix.Errno(v))
}

// Peek reports whether fd has bytes to read or an end (EOF, an error)
// waiting, without taking them: a pooled connection with either is not to
// be reused.
func Peek(fd int) bool {
	var b [1]byte
	_, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	return e != unix.EAGAIN
}
