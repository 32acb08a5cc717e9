package config

import (
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Bounds on volumes.NAME.ping_timeout. Below a second a busy brick's late
// answer disconnects every client (each reconnect reopens its files and
// locks); above GlusterFS's own 42s nobody waits that long.
const (
	minPingTimeout = time.Second
	maxPingTimeout = 42 * time.Second
)

// volumeEngines are the engines a volume can run on.
var volumeEngines = []string{"glusterfs"}

// volumeName is a GlusterFS volume name.
var volumeName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// glusterOptionName is a `gluster volume set` option: dotted words.
var glusterOptionName = regexp.MustCompile(`^[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$`)

// volumeOwnedSettings are the volume options haven sets itself, and the key
// that sets each instead (empty: haven decides alone; docs/volume.md says
// why each one).
var volumeOwnedSettings = map[string]string{
	"network.ping-timeout":        "volumes.NAME.ping_timeout",
	"cluster.quorum-type":         "",
	"cluster.quorum-count":        "",
	"cluster.server-quorum-type":  "",
	"cluster.server-quorum-ratio": "",
	"cluster.self-heal-daemon":    "",
	"auth.allow":                  "volumes.NAME.servers and volumes.NAME.mount.nodes",
	"transport.address-family":    "",
}

// volumes checks every volume, and what volumes share on a node: one
// glusterd, so one glusterd_dir; bricks and mount points of their own.
func (v *validator) volumes() {
	type use struct{ volume, what string }
	glusterdDir := map[string]use{} // node → the dir its first volume gave
	taken := map[string]use{}       // node + "\x00" + path → who has it
	// claim reports the first node on which path is another's.
	claim := func(path string, nodes []string, p, volume, what string) {
		for _, node := range nodes {
			key := node + "\x00" + filepath.Clean(NodePath(p, node))
			if prev, ok := taken[key]; ok {
				v.errorf(path, "%q on node %s is also the %s of volume %s: give each its own directory", p, node, prev.what, prev.volume)
				return
			}
			taken[key] = use{volume, what}
		}
	}
	if len(v.cfg.Volumes) > 0 && v.cfg.Coordination == nil {
		v.errorf("volumes", "needs the coordination section: the servers agree on the volume's creation through etcd")
	}
	for _, name := range sortedKeys(v.cfg.Volumes) {
		vol := v.cfg.Volumes[name]
		path := "volumes." + name
		if vol == nil {
			v.errorf(path, "required: the volume's servers, such as servers: [st1, st2, st3]")
			continue
		}
		v.volume(vol, path)
		for _, node := range vol.Servers {
			if prev, ok := glusterdDir[node]; ok && prev.what != vol.GlusterdDir {
				v.errorf(path+".glusterd_dir", "%q differs from volume %s's %q on node %s: a node runs one glusterd for all its volumes", vol.GlusterdDir, prev.volume, prev.what, node)
				break
			} else if !ok {
				glusterdDir[node] = use{name, vol.GlusterdDir}
			}
		}
		claim(path+".brick", vol.Servers, vol.Brick, name, "brick")
		if vol.Mount != nil && vol.Mount.Path != "" {
			claim(path+".mount.path", vol.Mount.Nodes, vol.Mount.Path, name, "mount point")
		}
	}
}

func (v *validator) volume(vol *Volume, path string) {
	if !volumeName.MatchString(vol.Name) {
		v.keyErrorf(path, "%q is not a volume name: use up to 64 letters, digits, '-' and '_'", vol.Name)
	}
	if !slices.Contains(volumeEngines, vol.Engine) {
		v.errorf(path+".engine", "%s", notOneOf(vol.Engine, volumeEngines...))
	}
	v.nodeRefs(path+".servers", vol.Servers, "the three storage nodes that hold the volume's bricks, such as servers: [st1, st2, st3]")
	if n := len(vol.Servers); n > 0 && n != 3 {
		v.errorf(path+".servers", "%d servers: a volume has three (replica 3, or replica 2 with an arbiter): with two, a partition cannot be told from a failure and files split-brain; more are not supported yet", n)
	}
	v.zones(path+".servers", vol.Servers)
	if vol.Arbiter != "" && !slices.Contains(vol.Servers, vol.Arbiter) {
		v.errorf(path+".arbiter", "%q is not one of the volume's servers (%s): the arbiter holds the third brick", vol.Arbiter, strings.Join(vol.Servers, ", "))
	}
	v.absPath(path+".brick", vol.Brick)
	v.absPath(path+".glusterd_dir", vol.GlusterdDir)
	if d := vol.PingTimeout.D(); d < minPingTimeout || d > maxPingTimeout {
		v.errorf(path+".ping_timeout", "%s is not between %s and %s", vol.PingTimeout, Duration(minPingTimeout), Duration(maxPingTimeout))
	}
	if m := vol.Mount; m != nil {
		v.nodeRefs(path+".mount.nodes", m.Nodes, "the application nodes that mount the volume, such as nodes: [app1, app2]")
		if m.Path == "" {
			v.errorf(path+".mount.path", "required: the mount point, such as path: /srv/shop/files")
		} else {
			v.absPath(path+".mount.path", m.Path)
		}
	}
	if c := vol.Copy; c != nil {
		v.volumeCopy(vol, c, path+".copy")
	}
	for _, name := range sortedKeys(vol.Settings) {
		key := path + ".settings." + name
		switch by, owned := volumeOwnedSettings[name]; {
		case owned && by == "":
			v.keyErrorf(key, "%s is haven's to set (docs/volume.md says why): remove it", name)
		case owned:
			v.keyErrorf(key, "%s is haven's to set: use %s", name, strings.ReplaceAll(by, "NAME", vol.Name))
		case !glusterOptionName.MatchString(name):
			v.keyErrorf(key, "%q is not a GlusterFS volume option, such as performance.cache-size", name)
		case vol.Settings[name] == "" || strings.ContainsAny(vol.Settings[name], "\n\r\x00"):
			v.errorf(key, "%q: an option needs a value of one line", vol.Settings[name])
		}
	}
}

// Bounds on volumes.NAME.copy.every: more often than every 10s a pass
// never rests on a large volume; less often than a day is no recovery
// point anyone wants.
const (
	minCopyEvery = 10 * time.Second
	maxCopyEvery = 24 * time.Hour
)

func (v *validator) volumeCopy(vol *Volume, c *VolumeCopy, path string) {
	if vol.Mount == nil {
		v.errorf(path, "needs mount: the copy is made from a node that mounts the volume")
	}
	if c.Repository == nil {
		v.errorf(path+".repository", "required: where the copy goes, such as repository: {url: \"s3://shop-dr/files\", endpoint: ...}")
	} else {
		v.repository(path+".repository", c.Repository, path+".repository.url")
	}
	if d := c.Every.D(); d < minCopyEvery || d > maxCopyEvery {
		v.errorf(path+".every", "%s is not between %s and %s", c.Every, Duration(minCopyEvery), Duration(maxCopyEvery))
	}
}

// absPath checks a directory that may hold "{node}": absolute, and no other
// placeholder.
func (v *validator) absPath(path, p string) {
	if !filepath.IsAbs(p) {
		v.errorf(path, "%q is not an absolute path", p)
	}
	v.nodePath(path, p)
}

// volumeProbe checks a check's volume probe: a volume that is mounted.
func (v *validator) volumeProbe(p *VolumeProbe, path string) {
	if p == nil {
		return
	}
	vol, ok := v.cfg.Volumes[p.Name]
	switch {
	case p.Name == "":
		v.errorf(path+".name", "required: the volume whose mount the check asks about, such as name: files")
	case !ok:
		v.errorf(path+".name", "%s", undefined("volume", p.Name, sortedKeys(v.cfg.Volumes)))
	case vol == nil || vol.Mount == nil:
		v.errorf(path+".name", "volume %s has no mount: the check asks about the mount of the node at the target's address", p.Name)
	}
	if p.Port < 1 || p.Port > 65535 {
		v.errorf(path+".port", "%d is not a port between 1 and 65535 (leave it out for admin.port)", p.Port)
	}
}
