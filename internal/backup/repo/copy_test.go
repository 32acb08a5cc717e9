package repo

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/haven-ha/haven/internal/testenv/s3server"
)

// TestCopyFileToS3: a copy to a second repository (an S3 bucket, as in
// another region) holds every object under the prefix, manifests written
// last; a second copy copies nothing; an object added or changed in size
// is copied by the next; objects outside the prefix are not.
func TestCopyFileToS3(t *testing.T) {
	ctx := context.Background()
	src, err := OpenFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dst := openS3(t, s3server.Start(t, s3server.Options{}))
	put(t, src, "shop/cluster.json", `{"cluster":"shop"}`)
	put(t, src, "shop/base/1/manifest.json", "{}")
	put(t, src, "shop/base/1/base/1/1259", "table")
	put(t, src, "shop/wal/000000010000000000000001", "one")
	put(t, src, "blog/wal/000000010000000000000001", "not copied")
	big := bytes.Repeat([]byte("x"), 20<<20)
	if err := src.Put(ctx, "shop/base/1/base/1/big", bytes.NewReader(big), int64(len(big))); err != nil {
		t.Fatal(err)
	}
	put(t, dst, "shop/wal/000000010000000000000001", "one") // already there

	var order []string
	logged := &listingRepo{Repository: dst, puts: &order}
	st, err := Copy(ctx, logged, src, "shop/")
	if err != nil {
		t.Fatal(err)
	}
	if st.Copied != 4 || st.Skipped != 1 || st.Bytes != int64(len(big))+2+5+18 {
		t.Errorf("copied %+v; want 4 copied, 1 skipped, %d bytes", st, len(big)+25)
	}
	if len(order) == 0 || order[len(order)-1] != "shop/base/1/manifest.json" {
		t.Errorf("copied in the order %v; want the manifest last", order)
	}
	if want := "shop/base/1/base/1/1259 shop/base/1/base/1/big shop/base/1/manifest.json shop/cluster.json shop/wal/000000010000000000000001"; names(list(t, dst, "")) != want {
		t.Errorf("the copy lists %s; want %s", names(list(t, dst, "")), want)
	}
	if got := get(t, dst, "shop/base/1/base/1/big"); got != string(big) {
		t.Errorf("the large object's copy reads %d bytes; want %d", len(got), len(big))
	}

	st, err = Copy(ctx, dst, src, "shop/")
	if err != nil || st.Copied != 0 || st.Skipped != 5 {
		t.Errorf("a second copy: %+v, %v; want nothing copied, 5 skipped", st, err)
	}
	put(t, src, "shop/wal/000000010000000000000002", "two")
	put(t, src, "shop/base/1/base/1/1259", "table, grown")
	st, err = Copy(ctx, dst, src, "shop/")
	if err != nil || st.Copied != 2 || st.Skipped != 4 {
		t.Errorf("a copy after two changes: %+v, %v; want 2 copied, 4 skipped", st, err)
	}
	if got := get(t, dst, "shop/base/1/base/1/1259"); got != "table, grown" {
		t.Errorf("the changed object's copy reads %q", got)
	}
	if _, err := Copy(ctx, dst, src, "shop/"); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Stat(ctx, "blog/wal/000000010000000000000001"); !IsNotExist(err) {
		t.Errorf("an object outside the prefix was copied: %v", err)
	}
}

// listingRepo records the names put, in order.
type listingRepo struct {
	Repository
	puts *[]string
}

func (l *listingRepo) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	*l.puts = append(*l.puts, name)
	return l.Repository.Put(ctx, name, r, size)
}
