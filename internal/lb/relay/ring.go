package relay

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// An io_uring instance, as much of it as the ring loops use: a submission
// queue the loop fills and a completion queue it drains, both shared with
// the kernel through memory. The layouts are the kernel's
// (include/uapi/linux/io_uring.h).

type ringParams struct {
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

type ringSQE struct {
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

type ringCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

// getEventsArg is struct io_uring_getevents_arg: the wait's timeout.
type getEventsArg struct {
	sigmask     uint64
	sigmaskSize uint32
	minWaitUsec uint32
	ts          uint64
}

const (
	opRead        = 22
	opSend        = 26
	opRecv        = 27
	opAsyncCancel = 14

	// SINGLE_ISSUER (Linux 6.0) and DEFER_TASKRUN (6.1): only the
	// creating thread submits, and the kernel finishes requests when that
	// thread asks for completions rather than by interrupting it.
	setupSingleIssuer = 1 << 12
	setupDeferTaskrun = 1 << 13

	enterGetEvents = 1 << 0
	enterExtArg    = 1 << 3

	featSingleMmap = 1 << 0
	featNoDrop     = 1 << 1

	// cancelFD|cancelAll (Linux 5.19): every request on a descriptor;
	// cancelFDFixed: the descriptor is a slot of the ring's file table.
	cancelAll     = 1 << 0
	cancelFD      = 1 << 1
	cancelFDFixed = 1 << 3

	// The ring's file table (Linux 5.19 for a sparse one) and its own
	// descriptor registered with the thread (5.18), below.
	registerFiles2      = 13
	registerRingFDs     = 20
	unregisterRingFDs   = 21
	rsrcRegisterSparse  = 1 << 0
	opFilesUpdate       = 20
	sqeFixedFile        = 1 << 0
	sqeCQESkipSuccess   = 1 << 6
	enterRegisteredRing = 1 << 4
)

// ringFlags are the flags rings are set up with (a variable for the
// tests, which make the setup fail as an old kernel would).
var ringFlags uint32 = setupSingleIssuer | setupDeferTaskrun

type ring struct {
	fd                     int
	mem, sqMem             []byte
	sqHead, sqTail, sqMask *uint32
	sqArray                []uint32
	sqes                   []ringSQE
	cqHead, cqTail, cqMask *uint32
	cqes                   []ringCQE
	tail                   uint32 // the next free entry (published at enter)
	// enterFD is what io_uring_enter is called on: the ring's descriptor,
	// or its index among the thread's registered rings (enterFlags then
	// says so), which spares the kernel looking the descriptor up, with a
	// reference counted atomically in a threaded process, at every enter.
	enterFD, enterFlags uintptr
	// The wait's argument and timeout, on the heap: the kernel reads them
	// through addresses, which a goroutine stack could move under.
	arg getEventsArg
	ts  unix.Timespec
}

// newRing sets up a ring on the calling thread, which alone may submit to
// it from then on (SINGLE_ISSUER): call it from a locked thread.
func newRing(entries uint32) (*ring, error) {
	p := ringParams{flags: ringFlags}
	fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if e != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", e)
	}
	r := &ring{fd: int(fd)}
	if p.features&featSingleMmap == 0 || p.features&featNoDrop == 0 {
		unix.Close(r.fd)
		return nil, fmt.Errorf("io_uring: the kernel lacks single-mmap rings or no-drop completions (features %#x)", p.features)
	}
	size := max(int(p.sqOff.array+p.sqEntries*4), int(p.cqOff.cqes+p.cqEntries*uint32(unsafe.Sizeof(ringCQE{}))))
	mem, err := unix.Mmap(r.fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		unix.Close(r.fd)
		return nil, fmt.Errorf("io_uring: mmap rings: %w", err)
	}
	sq, err := unix.Mmap(r.fd, 0x10000000, int(p.sqEntries)*int(unsafe.Sizeof(ringSQE{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		unix.Munmap(mem)
		unix.Close(r.fd)
		return nil, fmt.Errorf("io_uring: mmap entries: %w", err)
	}
	r.mem, r.sqMem = mem, sq
	base := unsafe.Pointer(&mem[0])
	u32 := func(off uint32) *uint32 { return (*uint32)(unsafe.Add(base, off)) }
	r.sqHead, r.sqTail, r.sqMask = u32(p.sqOff.head), u32(p.sqOff.tail), u32(p.sqOff.ringMask)
	r.sqArray = unsafe.Slice(u32(p.sqOff.array), p.sqEntries)
	r.cqHead, r.cqTail, r.cqMask = u32(p.cqOff.head), u32(p.cqOff.tail), u32(p.cqOff.ringMask)
	r.cqes = unsafe.Slice((*ringCQE)(unsafe.Add(base, p.cqOff.cqes)), p.cqEntries)
	r.sqes = unsafe.Slice((*ringSQE)(unsafe.Pointer(&sq[0])), p.sqEntries)
	r.tail = *r.sqTail
	r.enterFD = uintptr(r.fd)
	r.registerRing()
	return r, nil
}

// rsrcUpdate is struct io_uring_rsrc_update.
type rsrcUpdate struct {
	offset, resv uint32
	data         uint64
}

// registerRing registers the ring's descriptor with the calling thread,
// the only one that enters it (SINGLE_ISSUER); where the kernel refuses,
// enter uses the descriptor.
func (r *ring) registerRing() {
	up := rsrcUpdate{offset: ^uint32(0), data: uint64(r.fd)} // offset -1: any free index
	n, _, e := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerRingFDs, uintptr(unsafe.Pointer(&up)), 1, 0, 0)
	if e == 0 && n == 1 {
		r.enterFD, r.enterFlags = uintptr(up.offset), enterRegisteredRing
	}
}

// rsrcRegister is struct io_uring_rsrc_register.
type rsrcRegister struct {
	nr, flags  uint32
	resv2      uint64
	data, tags uint64
}

// registerFiles gives the ring a file table of n empty slots. A request
// on a slot (sqeFixedFile) uses the file the table holds a reference to;
// on a descriptor, the kernel looks it up and counts a reference (an
// atomic add, in a threaded process) for every send and receive.
func (r *ring) registerFiles(n uint32) error {
	reg := rsrcRegister{nr: n, flags: rsrcRegisterSparse}
	if _, _, e := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerFiles2, uintptr(unsafe.Pointer(&reg)), unsafe.Sizeof(reg), 0, 0); e != 0 {
		return fmt.Errorf("io_uring: register a file table of %d slots: %w", n, e)
	}
	return nil
}

// get returns a zeroed submission entry, submitting what is queued first
// when the queue is full.
func (r *ring) get() *ringSQE {
	for r.tail-atomic.LoadUint32(r.sqHead) >= uint32(len(r.sqes)) {
		if err := r.enter(false, 0, false); err != nil {
			panic(fmt.Sprintf("relay: io_uring_enter: %v", err)) // EBADF, EFAULT: a bug here
		}
	}
	i := r.tail & *r.sqMask
	r.sqArray[i] = i
	r.tail++
	s := &r.sqes[i]
	*s = ringSQE{}
	return s
}

// enter submits what is queued and, with wait, waits for a completion for
// at most timeout nanoseconds (ETIME when none came). The call is raw, and
// the loop's thread keeps its processor while it waits (see NewRing),
// unless scheduled: then the scheduler may take the processor back.
func (r *ring) enter(wait bool, timeout int64, scheduled bool) error {
	atomic.StoreUint32(r.sqTail, r.tail)
	toSubmit := r.tail - atomic.LoadUint32(r.sqHead)
	var flags, minComplete, arg, argSize uintptr
	if wait {
		r.ts = unix.NsecToTimespec(timeout)
		r.arg = getEventsArg{ts: uint64(uintptr(unsafe.Pointer(&r.ts)))}
		flags, minComplete = enterGetEvents|enterExtArg, 1
		arg, argSize = uintptr(unsafe.Pointer(&r.arg)), unsafe.Sizeof(r.arg)
	}
	call := unix.RawSyscall6
	if scheduled {
		call = unix.Syscall6
	}
	_, _, e := call(unix.SYS_IO_URING_ENTER, r.enterFD, uintptr(toSubmit), minComplete, flags|r.enterFlags, arg, argSize)
	switch e {
	case 0, unix.EINTR, unix.ETIME, unix.EAGAIN, unix.EBUSY:
		// EINTR: a signal (the runtime's preemption); EAGAIN, EBUSY: the
		// kernel is short of memory or completions are backed up: the
		// caller drains completions and comes back.
		return nil
	}
	return e
}

// completions calls f with each completion, its slot freed first: f may
// queue requests, and a full submission queue is submitted at once
// (get), which the kernel may refuse while completions it could not post
// wait for room.
func (r *ring) completions(f func(c ringCQE)) (n int) {
	head, tail := *r.cqHead, atomic.LoadUint32(r.cqTail)
	for ; head != tail; n++ {
		c := r.cqes[head&*r.cqMask]
		head++
		atomic.StoreUint32(r.cqHead, head)
		f(c)
	}
	return n
}

// close releases the ring; requests still in flight are cancelled.
func (r *ring) close() {
	if r.enterFlags != 0 {
		up := rsrcUpdate{offset: uint32(r.enterFD)}
		unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), unregisterRingFDs, uintptr(unsafe.Pointer(&up)), 1, 0, 0)
	}
	unix.Munmap(r.sqMem)
	unix.Munmap(r.mem)
	unix.Close(r.fd)
}

// A ring of provided buffers (IORING_REGISTER_PBUF_RING, Linux 5.19): a
// receive asks the kernel to pick a buffer when bytes arrive, so that a
// side waiting for bytes holds no memory (an idle connection costs none),
// and the loop gives each buffer back once its bytes are sent on.

const (
	registerPbufRing = 22
	sqeBufferSelect  = 1 << 5
	cqeFBuffer       = 1 << 0
	cqeBufferShift   = 16

	// A multishot receive (Linux 6.0) stays armed: one completion per
	// arrival, each with the more flag until the last.
	recvMultishot = 1 << 1 // in the entry's ioprio
	cqeFMore      = 1 << 1
)

type bufReg struct {
	ringAddr    uint64
	ringEntries uint32
	bgid        uint16
	flags       uint16
	resv        [3]uint64
}

// provided is one entry of the ring: struct io_uring_buf. The ring's tail
// is the first entry's resv.
type provided struct {
	addr uint64
	len  uint32
	bid  uint16
	resv uint16
}

type bufRing struct {
	group   uint16
	size    int
	mem     []byte // the entries, shared with the kernel
	entries []provided
	data    []byte // count buffers of size bytes, off the Go heap: the kernel writes them
	tail    uint16
}

// newBufRing registers count buffers of size bytes (count a power of two)
// with r as buffer group group, every buffer provided.
func newBufRing(r *ring, group uint16, count, size int) (*bufRing, error) {
	mem, err := unix.Mmap(-1, 0, count*int(unsafe.Sizeof(provided{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("io_uring: buffer ring: %w", err)
	}
	data, err := unix.Mmap(-1, 0, count*size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		unix.Munmap(mem)
		return nil, fmt.Errorf("io_uring: buffers: %w", err)
	}
	b := &bufRing{group: group, size: size, mem: mem, data: data,
		entries: unsafe.Slice((*provided)(unsafe.Pointer(&mem[0])), count)}
	reg := bufReg{ringAddr: uint64(uintptr(unsafe.Pointer(&mem[0]))), ringEntries: uint32(count), bgid: group}
	if _, _, e := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerPbufRing, uintptr(unsafe.Pointer(&reg)), 1, 0, 0); e != 0 {
		b.unmap()
		return nil, fmt.Errorf("io_uring: register buffer ring: %w", e)
	}
	for bid := range count {
		b.put(uint16(bid))
	}
	b.publish()
	return b, nil
}

// buf is buffer bid.
func (b *bufRing) buf(bid uint16) []byte {
	off := int(bid) * b.size
	return b.data[off : off+b.size : off+b.size]
}

// put gives buffer bid back to the kernel, once published.
func (b *bufRing) put(bid uint16) {
	e := &b.entries[int(b.tail)&(len(b.entries)-1)]
	// Field by field: the first entry's resv is the tail, which only
	// publish writes.
	e.addr = uint64(uintptr(unsafe.Pointer(&b.data[int(bid)*b.size])))
	e.len = uint32(b.size)
	e.bid = bid
	b.tail++
}

// publish makes the buffers put since the last publish the kernel's: it
// stores the tail (a 16-bit field) with the first entry's bid in one
// atomic 32-bit store, after the entries.
func (b *bufRing) publish() {
	word := (*uint32)(unsafe.Pointer(&b.entries[0].bid))
	atomic.StoreUint32(word, uint32(b.entries[0].bid)|uint32(b.tail)<<16)
}

func (b *bufRing) unmap() {
	unix.Munmap(b.data)
	unix.Munmap(b.mem)
}
