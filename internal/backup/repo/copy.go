package repo

import (
	"context"
	"fmt"
	"path"
)

// CopyStats counts what Copy did.
type CopyStats struct {
	Copied, Skipped int   // objects
	Bytes           int64 // copied
}

// manifestName is the object a base backup writes last (internal/backup):
// Copy writes it last too, so that a backup is complete in the copy only
// when every file it lists is there.
const manifestName = "manifest.json"

// Copy copies every object under prefix in src that dst lacks, or holds
// with another size, to dst (another region's repository). What is
// already there is skipped, so Copy can be run again after a failure, or
// on a schedule, and copies only what is new; an object of equal size and
// other contents is not noticed (objects are written once under a name:
// a WAL segment, a backup's file). Objects named manifest.json are copied
// after all others. Nothing is deleted from dst.
func Copy(ctx context.Context, dst, src Repository, prefix string) (CopyStats, error) {
	var st CopyStats
	have := map[string]int64{}
	err := dst.List(ctx, prefix, func(i Info) error { have[i.Name] = i.Size; return nil })
	if err != nil {
		return st, fmt.Errorf("repo: copy %s to %s: %w", src, dst, err)
	}
	var todo, last []Info
	err = src.List(ctx, prefix, func(i Info) error {
		switch size, ok := have[i.Name]; {
		case ok && size == i.Size:
			st.Skipped++
		case path.Base(i.Name) == manifestName:
			last = append(last, i)
		default:
			todo = append(todo, i)
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("repo: copy %s to %s: %w", src, dst, err)
	}
	for _, i := range append(todo, last...) {
		if err := copyOne(ctx, dst, src, i); err != nil {
			return st, fmt.Errorf("repo: copy %s to %s: %w", src, dst, err)
		}
		st.Copied++
		st.Bytes += i.Size
	}
	return st, nil
}

func copyOne(ctx context.Context, dst, src Repository, i Info) error {
	rc, err := src.Get(ctx, i.Name)
	if err != nil {
		return err
	}
	defer rc.Close()
	// With the size listed: an object replaced by one of another length
	// since the listing fails this copy, and is copied by the next.
	return dst.Put(ctx, i.Name, rc, i.Size)
}
