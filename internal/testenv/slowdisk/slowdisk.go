// Package slowdisk mounts a directory whose fsync is slow, for tests that
// need a member with a slow disk: a FUSE loopback of a directory in memory
// (go-fuse's LoopbackNode) whose files wait a set time before every fsync
// and fdatasync. Reads and writes pass straight through; only what makes
// data durable, which is what etcd and PostgreSQL wait for, is slow. Only
// tests import it.
package slowdisk

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/haven-ha/haven/internal/testenv"
)

// Mount mounts a slow directory and returns its path; it is unmounted and
// removed when the test ends. Every fsync on a file below it waits delay
// first. It needs root and /dev/fuse (testenv.Need: skipped off CI).
func Mount(t testing.TB, delay time.Duration) string {
	t.Helper()
	testenv.NeedRoot(t)
	_, err := os.Stat("/dev/fuse")
	testenv.Need(t, err == nil, "no /dev/fuse for a slow disk: %v", err)
	under := testenv.MemoryDir(t)
	mnt, err := os.MkdirTemp("", "slowdisk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(mnt) })
	var st syscall.Stat_t
	if err := syscall.Stat(under, &st); err != nil {
		t.Fatal(err)
	}
	root := &fs.LoopbackRoot{Path: under, Dev: uint64(st.Dev)}
	node := &slowNode{LoopbackNode: &fs.LoopbackNode{RootData: root}, delay: delay}
	root.RootNode = node
	server, err := fs.Mount(mnt, node, &fs.Options{MountOptions: fuse.MountOptions{
		AllowOther:  true, // the postgres user, and agents in other namespaces
		DirectMount: true, // as root, mount(2) itself: no fusermount needed
		FsName:      "slowdisk",
		Name:        "slowdisk",
	}})
	testenv.Need(t, err == nil, "cannot mount a FUSE file system: %v", err)
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			// A process still holds a file open: detach it lazily.
			if out, lerr := exec.Command("umount", "-l", mnt).CombinedOutput(); lerr != nil {
				t.Errorf("unmount %s: %v; umount -l: %v: %s", mnt, err, lerr, out)
			}
		}
	})
	if err := os.Chmod(mnt, 0o711); err != nil {
		t.Fatal(err)
	}
	return mnt
}

// slowNode is a loopback node whose files fsync slowly, and whose children
// are slowNodes too.
type slowNode struct {
	*fs.LoopbackNode
	delay time.Duration
}

var (
	_ fs.NodeWrapChilder = (*slowNode)(nil)
	_ fs.NodeOpener      = (*slowNode)(nil)
	_ fs.NodeCreater     = (*slowNode)(nil)
)

func (n *slowNode) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &slowNode{LoopbackNode: ops.(*fs.LoopbackNode), delay: n.delay}
}

func (n *slowNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	return n.wrap(fh), fl, errno
}

func (n *slowNode) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	in, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	return in, n.wrap(fh), fl, errno
}

func (n *slowNode) wrap(fh fs.FileHandle) fs.FileHandle {
	if lf, ok := fh.(*fs.LoopbackFile); ok {
		return &slowFile{LoopbackFile: lf, delay: n.delay}
	}
	return fh
}

// slowFile is a loopback file whose Fsync waits first.
type slowFile struct {
	*fs.LoopbackFile
	delay time.Duration
}

// The wait ignores ctx: the kernel interrupts a FUSE request when the
// calling thread takes a signal (Go's runtime preempts threads with
// SIGURG), and a disk's fsync never fails with EINTR: etcd's database
// treats that failure as fatal.
func (f *slowFile) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	time.Sleep(f.delay)
	return f.LoopbackFile.Fsync(context.WithoutCancel(ctx), flags)
}

// String says what the disk is, for test logs.
func (f *slowFile) String() string { return fmt.Sprintf("slow file (fsync +%v)", f.delay) }
