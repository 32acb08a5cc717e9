package coord

import (
	"fmt"
	"os"
	"path/filepath"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
)

// RestoreRevisionBump is how far a restore moves the key space's revision
// past the snapshot's: further than any number of writes made after the
// snapshot, so that every revision and fencing epoch handed out after the
// restore is higher than any handed out before it (etcdutl's
// --bump-revision; the history is marked compacted, so that no watcher
// resumes into it).
const RestoreRevisionBump = 1_000_000_000

// SnapshotInfo describes a snapshot file.
type SnapshotInfo struct {
	Revision int64  `json:"revision"`
	Keys     int    `json:"keys"`
	Size     int64  `json:"size"`
	Hash     uint32 `json:"hash"`
}

// RestoreMember makes cfg's data directory, which must not hold data,
// from the snapshot at path (haven coord snapshot's file, or etcdctl's),
// as etcdutl snapshot restore does: a new cluster of cfg's initial
// members, of which this is one, with the snapshot's keys, the revision
// bumped by RestoreRevisionBump. Every member is restored from the same
// file, each with its own name; started, they form the restored cluster.
func RestoreMember(cfg MemberConfig, path string) (SnapshotInfo, error) {
	m, err := NewMember(cfg)
	if err != nil {
		return SnapshotInfo{}, err
	}
	if entries, err := os.ReadDir(m.dataDir); err == nil && len(entries) > 0 {
		return SnapshotInfo{}, fmt.Errorf("coord: restore: %s holds data: move it aside first", m.dataDir)
	}
	mgr := snapshot.NewV3(m.etcdLog)
	st, err := mgr.Status(path)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("coord: restore: %s is not a snapshot etcd can read: %w", path, err)
	}
	initial := map[string]string{}
	for name, u := range m.initial {
		initial[name] = u.String()
	}
	if err := os.MkdirAll(filepath.Dir(m.dataDir), 0o711); err != nil {
		return SnapshotInfo{}, fmt.Errorf("coord: restore: %w", err)
	}
	err = mgr.Restore(snapshot.RestoreConfig{
		SnapshotPath:        path,
		Name:                m.name,
		OutputDataDir:       m.dataDir,
		PeerURLs:            []string{m.peer.String()},
		InitialCluster:      clusterString(initial),
		InitialClusterToken: restoredToken(m.token, st.Hash),
		RevisionBump:        RestoreRevisionBump,
		MarkCompacted:       true,
	})
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("coord: restore %s into %s: %w", path, m.dataDir, err)
	}
	return SnapshotInfo{Revision: st.Revision, Keys: st.TotalKey, Size: st.TotalSize, Hash: st.Hash}, nil
}

// restoredToken is the cluster token of a group restored from the
// snapshot with hash: the same for every member restored from that file,
// and another than the old group's, so that the restored group's member
// and cluster IDs differ from the old ones and a member still holding the
// old group's data cannot be taken for one of the new (etcd uses the
// token only to make those IDs, when a data directory is created).
func restoredToken(token string, hash uint32) string {
	return fmt.Sprintf("%s-restored-%08x", token, hash)
}
