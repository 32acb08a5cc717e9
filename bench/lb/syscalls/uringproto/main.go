// Command uringproto is a probe, not part of haven: a TCP relay on
// io_uring, to measure what submitting a relay's reads and writes in one
// io_uring_enter per turn (instead of a read, a write and epoll waits per
// message) would save, beside haven's epoll relay and HAProxy
// (bench/lb/syscalls/uring.sh). It waits in io_uring_enter with a raw
// system call that holds its processor (-chores: with the rest of an
// agent on another, as haven's relay on io_uring, internal/lb/relay,
// runs); it relays to one backend, closes both sides at the first end or
// error, and knows no timeouts, drain or reload: a bare upper bound.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  struct {
		head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
		userAddr                                                        uint64
	}
	cqOff struct {
		head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
		userAddr                                                        uint64
	}
}

type sqe struct {
	opcode, flags uint8
	ioprio        uint16
	fd            int32
	off, addr     uint64
	len, opFlags  uint32
	userData      uint64
	bufIndex      uint16
	personality   uint16
	spliceFdIn    int32
	addr3, pad2   uint64
}

type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

const (
	opAccept = 13
	opSend   = 26
	opRecv   = 27

	setupSingleIssuer = 4096
	setupDeferTaskrun = 8192
	enterGetEvents    = 1
)

type ring struct {
	fd                     int
	sqHead, sqTail, sqMask *uint32
	sqArray                []uint32
	sqes                   []sqe
	cqHead, cqTail, cqMask *uint32
	cqes                   []cqe
	pending                uint32
}

func newRing(entries uint32) *ring {
	var p params
	p.flags = setupSingleIssuer | setupDeferTaskrun
	fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if e != 0 {
		fatal(fmt.Errorf("io_uring_setup: %w", e))
	}
	r := &ring{fd: int(fd)}
	sqSize := int(p.sqOff.array + p.sqEntries*4)
	cqSize := int(p.cqOff.cqes + p.cqEntries*16)
	size := max(sqSize, cqSize) // IORING_FEAT_SINGLE_MMAP
	mem, err := unix.Mmap(r.fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		fatal(err)
	}
	base := unsafe.Pointer(&mem[0])
	u32 := func(off uint32) *uint32 { return (*uint32)(unsafe.Add(base, off)) }
	r.sqHead, r.sqTail, r.sqMask = u32(p.sqOff.head), u32(p.sqOff.tail), u32(p.sqOff.ringMask)
	r.sqArray = unsafe.Slice(u32(p.sqOff.array), p.sqEntries)
	r.cqHead, r.cqTail, r.cqMask = u32(p.cqOff.head), u32(p.cqOff.tail), u32(p.cqOff.ringMask)
	r.cqes = unsafe.Slice((*cqe)(unsafe.Add(base, p.cqOff.cqes)), p.cqEntries)
	sq, err := unix.Mmap(r.fd, 0x10000000, int(p.sqEntries)*64, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		fatal(err)
	}
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&sq[0])), p.sqEntries)
	return r
}

func (r *ring) get() *sqe {
	tail := *r.sqTail + r.pending
	if tail-atomic.LoadUint32(r.sqHead) > uint32(len(r.sqes)) {
		fatal(fmt.Errorf("submission queue full"))
	}
	i := tail & *r.sqMask
	r.sqArray[i] = i
	r.pending++
	s := &r.sqes[i]
	*s = sqe{}
	return s
}

// enter submits what was queued and waits for at least one completion.
func (r *ring) enter() {
	atomic.StoreUint32(r.sqTail, *r.sqTail+r.pending)
	n := r.pending
	r.pending = 0
	for {
		var e unix.Errno
		if *scheduled {
			_, _, e = unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), 1, enterGetEvents, 0, 0)
		} else {
			_, _, e = unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), 1, enterGetEvents, 0, 0)
		}
		if e == unix.EINTR {
			n = 0
			continue
		}
		if e != 0 {
			fatal(fmt.Errorf("io_uring_enter: %w", e))
		}
		return
	}
}

type side struct {
	fd    int
	buf   []byte
	other *side
	id    int
}

var sides []*side

// scheduled waits through the scheduler's system call state (the
// processor can be handed to other goroutines while the loop waits), as
// an agent would have to, instead of a raw call that keeps it.
var scheduled = flag.Bool("scheduled", false, "wait in io_uring_enter as a scheduled system call, not a raw one")

// chores stands for the rest of an agent beside the relay: with
// GOMAXPROCS=2 the relay's raw wait holds one processor and the chores
// run on the other, as health checks, the admin API and etcd would.
var chores = flag.Duration("chores", 0, "every this often, do a little work on another goroutine (0: none)")

// doChores wakes every d, allocates and hashes a little, as a health check
// or a heartbeat would, for as long as the probe runs.
func doChores(d time.Duration) {
	var sink uint64
	for range time.Tick(d) {
		b := make([]byte, 4096)
		for i := range b {
			sink = sink*31 + uint64(b[i]) + uint64(i)
		}
	}
	_ = sink
}

const lnID = 0

func main() {
	listen := flag.String("listen", "127.0.0.1:18084", "")
	backend := flag.String("backend", "127.0.0.1:19001", "")
	flag.Parse()
	runtime.LockOSThread()
	if *chores > 0 {
		go doChores(*chores)
	}
	lnfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		fatal(err)
	}
	unix.SetsockoptInt(lnfd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	unix.SetsockoptInt(lnfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if err := unix.Bind(lnfd, sa(*listen)); err != nil {
		fatal(err)
	}
	if err := unix.Listen(lnfd, 1024); err != nil {
		fatal(err)
	}
	r := newRing(1024)
	sides = append(sides, nil) // id 0: the listener
	accept := func() {
		s := r.get()
		s.opcode, s.fd, s.userData = opAccept, int32(lnfd), lnID
	}
	recv := func(x *side) {
		s := r.get()
		s.opcode, s.fd, s.addr, s.len, s.userData = opRecv, int32(x.fd), uint64(uintptr(unsafe.Pointer(&x.buf[0]))), uint32(len(x.buf)), uint64(x.id)<<1
	}
	send := func(x *side, p []byte) { // x sends p
		s := r.get()
		s.opcode, s.fd, s.addr, s.len, s.userData = opSend, int32(x.fd), uint64(uintptr(unsafe.Pointer(&p[0]))), uint32(len(p)), uint64(x.id)<<1|1
		s.opFlags = unix.MSG_NOSIGNAL
	}
	pendingSend := map[int][]byte{}
	accept()
	fmt.Fprintln(os.Stderr, "uring relay on", *listen)
	for {
		r.enter()
		head := *r.cqHead
		tail := atomic.LoadUint32(r.cqTail)
		for ; head != tail; head++ {
			c := r.cqes[head&*r.cqMask]
			if c.userData == lnID {
				accept()
				if c.res < 0 {
					continue
				}
				bfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
				if err != nil {
					unix.Close(int(c.res))
					continue
				}
				unix.SetsockoptInt(bfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
				if err := unix.Connect(bfd, sa(*backend)); err != nil {
					unix.Close(int(c.res))
					unix.Close(bfd)
					continue
				}
				a := &side{fd: int(c.res), buf: make([]byte, 16384), id: len(sides)}
				b := &side{fd: bfd, buf: make([]byte, 16384), id: len(sides) + 1}
				a.other, b.other = b, a
				sides = append(sides, a, b)
				recv(a)
				recv(b)
				continue
			}
			x := sides[c.userData>>1]
			if x == nil {
				continue
			}
			if c.userData&1 == 0 { // recv on x done: send to the other side
				if c.res <= 0 {
					unix.Close(x.fd)
					unix.Close(x.other.fd)
					sides[x.id], sides[x.other.id] = nil, nil
					delete(pendingSend, x.id)
					delete(pendingSend, x.other.id)
					continue
				}
				p := x.buf[:c.res]
				pendingSend[x.other.id] = p
				send(x.other, p)
				continue
			}
			// send by x done
			if c.res < 0 {
				continue
			}
			p := pendingSend[x.id][c.res:]
			if len(p) > 0 {
				pendingSend[x.id] = p
				send(x, p)
				continue
			}
			recv(x.other) // its buffer is free again
		}
		atomic.StoreUint32(r.cqHead, head)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "uringproto:", err)
	os.Exit(1)
}

func sa(hostport string) unix.Sockaddr {
	var a [4]byte
	var port int
	fmt.Sscanf(hostport, "%d.%d.%d.%d:%d", &a[0], &a[1], &a[2], &a[3], &port)
	return &unix.SockaddrInet4{Port: port, Addr: a}
}
