package base

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/wal"
)

// Verify reads back every file of cluster's backup label (the newest
// complete one when empty), from it and from the earlier backups it
// refers to, and checks each one's size and checksum; then that the
// archive holds the WAL from the backup's start to its stop. The error
// names the first file, in the manifest's order, that is missing or
// damaged.
func Verify(ctx context.Context, r repo.Repository, cluster, label string, workers int) (*Manifest, error) {
	m, err := verify(ctx, r, cluster, label, max(workers, 1))
	if err != nil {
		return nil, fmt.Errorf("base: verify %s of %s: %w", label, cluster, err)
	}
	return m, nil
}

func verify(ctx context.Context, r repo.Repository, cluster, label string, workers int) (*Manifest, error) {
	m, err := Find(ctx, r, cluster, label)
	if err != nil {
		return nil, err
	}
	ms, err := chain(ctx, r, m)
	if err != nil {
		return nil, err
	}
	err = parallel(ctx, workers, m.Files, func(ctx context.Context, d *decoders, f File) error {
		holder := ms[m.holder(f)]
		obj := fileObject(cluster, holder.Label, f.Path, holder.Compression)
		rc, err := r.Get(ctx, obj)
		if err != nil {
			return fmt.Errorf("%s: %w", f.Path, err)
		}
		defer rc.Close()
		dec, err := d.get(holder.Compression)
		if err != nil {
			return err
		}
		rd, err := dec.wrap(rc)
		if err == nil {
			h := sha256.New()
			var n int64
			n, err = io.Copy(h, rd)
			if err == nil {
				err = checkContent(f, n, h.Sum(nil))
			}
		}
		if err != nil {
			return fmt.Errorf("%s (%s in %s): %w", f.Path, obj, r, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := wal.Holds(ctx, r, cluster, m.Timeline, m.Start(), m.Stop()); err != nil {
		return nil, fmt.Errorf("the WAL from %s to %s: %w", m.StartLSN, m.StopLSN, err)
	}
	return m, nil
}
