package galera

import (
	"io/fs"
	"os"
	"syscall"
)

// chownLike gives path the owner of st (a file it replaces), so that a
// file the agent rewrites as root stays the server's.
func chownLike(path string, st fs.FileInfo) error {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok || os.Geteuid() != 0 {
		return nil
	}
	return os.Chown(path, int(sys.Uid), int(sys.Gid))
}
