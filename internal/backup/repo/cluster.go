package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"time"
)

// ClusterFile is the name, under a cluster's directory, of the object that
// says which cluster owns the directory.
const ClusterFile = "cluster.json"

// Owner is what ClusterFile holds.
type Owner struct {
	// Cluster is the haven cluster's name (cluster.name).
	Cluster string `json:"cluster"`
	// SystemID is PostgreSQL's database system identifier
	// (pg_control_system()), written as a decimal string: a JSON number
	// would lose its low digits in most readers.
	SystemID uint64 `json:"system_identifier,string"`
	// Claimed is when the directory was claimed.
	Claimed time.Time `json:"claimed"`
}

// ErrClaimed is what Claim's error wraps when another cluster owns the
// directory.
var ErrClaimed = errors.New("claimed by another cluster")

// Claim makes the directory dir of r (the cluster's name, by the layout
// of internal/backup) the cluster's own: it writes dir/cluster.json when
// there is none, and returns nil when the one there names the same cluster
// and system identifier. It refuses a directory that another cluster
// owns, naming it, so that two clusters never archive into one place:
// their WAL segments have the same names.
//
// Of two clusters that claim the same empty directory at the same
// moment, one wins and the other is refused: cluster.json is written only
// if absent (Creator: a file linked into place, an S3 conditional PUT).
// A Repository that is not a Creator gets a check and a write, two
// requests that two claimers can both pass; Claim reads back what it
// wrote to narrow that window, but does not close it.
func Claim(ctx context.Context, r Repository, dir string, me Owner) error {
	name := path.Join(dir, ClusterFile)
	owner, err := ReadOwner(ctx, r, dir)
	switch {
	case IsNotExist(err):
		if me.Claimed.IsZero() {
			me.Claimed = time.Now().UTC()
		}
		b, _ := json.MarshalIndent(me, "", "  ")
		b = append(b, '\n')
		if c, ok := r.(Creator); ok {
			err = c.Create(ctx, name, b)
		} else {
			err = r.Put(ctx, name, bytes.NewReader(b), int64(len(b)))
		}
		if err != nil && !errors.Is(err, ErrExist) { // ErrExist: another won; read whose it is
			return err
		}
		if owner, err = ReadOwner(ctx, r, dir); err != nil {
			return err
		}
	case err != nil:
		return err
	}
	if owner.Cluster != me.Cluster || owner.SystemID != me.SystemID {
		return fmt.Errorf("repo: %s: %w: %s belongs to cluster %s (system identifier %d, claimed %s), not to this cluster %s (system identifier %d): give this cluster a repository or cluster name of its own, or remove %s if cluster %s and its backups are gone for good",
			r, ErrClaimed, name, owner.Cluster, owner.SystemID, owner.Claimed.Format(time.RFC3339), me.Cluster, me.SystemID, name, owner.Cluster)
	}
	return nil
}

// ReadOwner reads dir/cluster.json; its error wraps ErrNotExist when the
// directory is not claimed.
func ReadOwner(ctx context.Context, r Repository, dir string) (Owner, error) {
	name := path.Join(dir, ClusterFile)
	rc, err := r.Get(ctx, name)
	if err != nil {
		return Owner{}, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	if err != nil {
		return Owner{}, fmt.Errorf("repo: %s: get %s: %w", r, name, err)
	}
	var o Owner
	if err := json.Unmarshal(b, &o); err != nil || o.Cluster == "" {
		if err == nil {
			err = fmt.Errorf("no cluster name in %s", strconv.Quote(string(b)))
		}
		return Owner{}, fmt.Errorf("repo: %s: %s is not a cluster's claim: %w", r, name, err)
	}
	return o, nil
}
