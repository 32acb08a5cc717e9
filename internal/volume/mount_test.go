package volume

import (
	"strings"
	"testing"
)

func TestParseMountinfo(t *testing.T) {
	const table = `22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
98 22 0:45 / /srv/shop/files rw,relatime shared:60 - fuse.glusterfs 198.18.1.11:files rw,user_id=0,group_id=0
99 22 0:46 / /srv/read\040only ro,relatime shared:61 - fuse.glusterfs 198.18.1.11:ro rw
100 22 0:47 / /srv/other rw,relatime - ext4 /dev/vdb rw
101 22 0:45 / /srv/hidden rw,relatime shared:60 - fuse.glusterfs 198.18.1.11:files rw
102 22 0:48 / /srv/hidden rw,relatime - tmpfs tmpfs rw
`
	for _, c := range []struct {
		path              string
		mounted, readOnly bool
	}{
		{"/srv/shop/files", true, false},
		{"/srv/shop/files/", true, false},
		{"/srv/read only", true, true},
		{"/srv/other", false, false},  // not GlusterFS
		{"/srv/hidden", false, false}, // a mount over it hides it
		{"/srv/missing", false, false},
	} {
		m, ro, err := parseMountinfo(strings.NewReader(table), c.path)
		if err != nil || m != c.mounted || ro != c.readOnly {
			t.Errorf("%s: mounted %v read-only %v (%v), want %v %v", c.path, m, ro, err, c.mounted, c.readOnly)
		}
	}
}
