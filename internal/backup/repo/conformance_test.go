package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// conformance runs the tests every Repository must pass. open returns a
// fresh, empty repository for each subtest.
func conformance(t *testing.T, open func(t *testing.T) Repository) {
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, open(t)) })
	t.Run("Names", func(t *testing.T) { testNames(t, open(t)) })
	t.Run("ListPages", func(t *testing.T) { testListPages(t, open(t)) })
	t.Run("WholeOrNothing", func(t *testing.T) { testWholeOrNothing(t, open(t)) })
	t.Run("Large", func(t *testing.T) { testLarge(t, open(t)) })
	t.Run("Cancel", func(t *testing.T) { testCancel(t, open(t)) })
	t.Run("Claim", func(t *testing.T) { testClaim(t, open(t)) })
	t.Run("Create", func(t *testing.T) { testCreate(t, open(t)) })
	t.Run("ClaimRace", func(t *testing.T) { testClaimRace(t, open(t)) })
}

func put(t *testing.T, r Repository, name, body string) {
	t.Helper()
	if err := r.Put(context.Background(), name, strings.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, r Repository, name string) string {
	t.Helper()
	rc, err := r.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return string(b)
}

func list(t *testing.T, r Repository, prefix string) []Info {
	t.Helper()
	var all []Info
	if err := r.List(context.Background(), prefix, func(i Info) error { all = append(all, i); return nil }); err != nil {
		t.Fatal(err)
	}
	return all
}

func names(infos []Info) string {
	var s []string
	for _, i := range infos {
		s = append(s, i.Name)
	}
	return strings.Join(s, " ")
}

// testRoundTrip: what is put is got back whole, listed by prefix in order
// with its size, replaced whole, and gone once deleted; a missing object
// says so, wrapping ErrNotExist and naming the repository.
func testRoundTrip(t *testing.T, r Repository) {
	ctx := context.Background()
	put(t, r, "shop/wal/000000010000000000000002", "two")
	put(t, r, "shop/wal/000000010000000000000001", "one")
	put(t, r, "shop/base/20261204/manifest.json", "{}")
	put(t, r, "shop/wal/000000010000000000000001", "one, again")
	put(t, r, "shop/wal2", "not under wal/")
	put(t, r, "empty", "")

	if got := get(t, r, "shop/wal/000000010000000000000001"); got != "one, again" {
		t.Errorf("got %q after a replace; want %q", got, "one, again")
	}
	if got := get(t, r, "empty"); got != "" {
		t.Errorf("the empty object reads %q", got)
	}
	l := list(t, r, "shop/wal/")
	if want := "shop/wal/000000010000000000000001 shop/wal/000000010000000000000002"; names(l) != want {
		t.Errorf("listed %s; want %s", names(l), want)
	}
	if len(l) == 2 && (l[0].Size != 10 || l[1].Size != 3 || l[0].Modified.IsZero()) {
		t.Errorf("listed %+v; want sizes 10 and 3 and a modification time", l)
	}
	if want := "empty shop/base/20261204/manifest.json shop/wal/000000010000000000000001 shop/wal/000000010000000000000002 shop/wal2"; names(list(t, r, "")) != want {
		t.Errorf("listed %s; want %s", names(list(t, r, "")), want)
	}
	if l := list(t, r, "none/"); len(l) != 0 {
		t.Errorf("listed %s under a prefix with nothing", names(l))
	}
	st, err := r.Stat(ctx, "shop/wal/000000010000000000000002")
	if err != nil || st.Size != 3 || st.Name != "shop/wal/000000010000000000000002" {
		t.Errorf("stat: %+v, %v", st, err)
	}
	stop := errors.New("stop")
	n := 0
	if err := r.List(ctx, "shop/", func(Info) error { n++; return stop }); err != stop || n != 1 {
		t.Errorf("list whose fn fails: %v after %d calls; want %v after 1", err, n, stop)
	}

	if err := r.Delete(ctx, "shop/wal/000000010000000000000002", "shop/wal/none", "shop/wal2"); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(ctx); err != nil {
		t.Errorf("delete of nothing: %v", err)
	}
	for _, name := range []string{"shop/wal/000000010000000000000002", "shop/wal", "nothing"} {
		_, err := r.Stat(ctx, name)
		if !IsNotExist(err) || !strings.Contains(err.Error(), r.String()) {
			t.Errorf("stat of %s: %v; want not exist, naming %s", name, err, r)
		}
		rc, err := r.Get(ctx, name)
		if !IsNotExist(err) || !strings.Contains(err.Error(), r.String()) {
			t.Errorf("get of %s: %v; want not exist, naming %s", name, err, r)
		}
		if rc != nil {
			rc.Close()
		}
	}
	if want := "empty shop/base/20261204/manifest.json shop/wal/000000010000000000000001"; names(list(t, r, "")) != want {
		t.Errorf("after delete listed %s; want %s", names(list(t, r, "")), want)
	}
}

// testNames: a name that is not a clean relative path is refused by every
// repository alike.
func testNames(t *testing.T, r Repository) {
	ctx := context.Background()
	for _, name := range []string{"", ".", "/abs", "../escape", "a/../b", "a//b", "a/", "x" + tempSuffix} {
		if err := r.Put(ctx, name, strings.NewReader("x"), 1); err == nil {
			t.Errorf("put %q was accepted", name)
		}
		if _, err := r.Stat(ctx, name); err == nil || IsNotExist(err) {
			t.Errorf("stat %q: %v; want an invalid name", name, err)
		}
	}
}

// testListPages: S3 answers a listing 1,000 keys at a time; 1,100 objects
// are all listed, once each, in order.
func testListPages(t *testing.T, r Repository) {
	const n = 1100
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				name := fmt.Sprintf("c/wal/%08X", i)
				errs <- r.Put(ctx, name, strings.NewReader(name), int64(len(name)))
			}
		})
	}
	for i := n - 1; i >= 0; i-- { // written backwards: the order is the listing's
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	put(t, r, "c/x", "beside")
	l := list(t, r, "c/wal/")
	if len(l) != n {
		t.Fatalf("listed %d objects; want %d", len(l), n)
	}
	for i, info := range l {
		if want := fmt.Sprintf("c/wal/%08X", i); info.Name != want || info.Size != int64(len(want)) {
			t.Fatalf("listed %s (%d bytes) at %d; want %s", info.Name, info.Size, i, want)
		}
	}
}

// testWholeOrNothing: a put that fails half way (its reader breaks, or
// gives more or fewer bytes than announced) leaves the old object as it
// was and nothing else listed.
func testWholeOrNothing(t *testing.T, r Repository) {
	ctx := context.Background()
	put(t, r, "c/obj", "old")
	for _, tc := range []struct {
		what string
		r    io.Reader
		size int64
	}{
		{"a reader that breaks after 1 MiB, size unknown", io.MultiReader(bytes.NewReader(make([]byte, 1<<20)), errReader{}), -1},
		{"a reader that breaks after 1 MiB of 2", io.MultiReader(bytes.NewReader(make([]byte, 1<<20)), errReader{}), 2 << 20},
		{"a reader that breaks after 20 MiB, size unknown (a multipart upload)", io.MultiReader(bytes.NewReader(make([]byte, 20<<20)), errReader{}), -1},
		{"2 bytes announced as 3", strings.NewReader("ab"), 3},
		{"4 bytes announced as 3", strings.NewReader("abcd"), 3},
	} {
		if err := r.Put(ctx, "c/obj", tc.r, tc.size); err == nil {
			t.Errorf("a put of %s succeeded", tc.what)
		} else if !strings.Contains(err.Error(), r.String()) {
			t.Errorf("a put of %s: %v; want an error naming %s", tc.what, err, r)
		}
		if got := get(t, r, "c/obj"); got != "old" {
			t.Errorf("after a failed put of %s the object reads %q; want the old %q", tc.what, got, "old")
		}
		if l := list(t, r, ""); names(l) != "c/obj" {
			t.Errorf("after a failed put of %s the repository lists %s; want only c/obj", tc.what, names(l))
		}
	}
}

// testLarge: 40 MiB of unknown size (S3: a multipart upload of three
// parts) comes back byte for byte.
func testLarge(t *testing.T, r Repository) {
	const size = 40 << 20
	ctx := context.Background()
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	want := sha256.Sum256(data)
	start := time.Now()
	// A reader that is neither a Seeker nor a ReaderAt, like a compressor.
	if err := r.Put(ctx, "c/base/big", struct{ io.Reader }{bytes.NewReader(data)}, -1); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("put %d MiB of unknown size to %s in %s (%.0f MiB/s)", size>>20, r, took.Round(time.Millisecond), float64(size>>20)/took.Seconds())
	st, err := r.Stat(ctx, "c/base/big")
	if err != nil || st.Size != size {
		t.Fatalf("stat: %+v, %v; want %d bytes", st, err, size)
	}
	rc, err := r.Get(ctx, "c/base/big")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	h := sha256.New()
	if n, err := io.Copy(h, rc); err != nil || n != size {
		t.Fatalf("read back %d bytes, %v; want %d", n, err, size)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Error("the object read back differs from what was put")
	}
}

// testCancel: a put whose ctx ends, before or during the upload, fails
// with ctx's error and stores nothing.
func testCancel(t *testing.T, r Repository) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := r.Put(ctx, "c/before", strings.NewReader("x"), 1)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("put with a cancelled ctx: %v; want %v", err, context.Canceled)
	}
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	// The reader cancels the put's ctx after 20 MiB, part way through.
	mid := &cancellingReader{r: bytes.NewReader(make([]byte, 40<<20)), after: 20 << 20, cancel: cancel}
	err = r.Put(ctx, "c/during", mid, -1)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("put cancelled half way: %v; want %v", err, context.Canceled)
	}
	if l := list(t, r, ""); len(l) != 0 {
		t.Errorf("after cancelled puts the repository lists %s; want nothing", names(l))
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := r.Stat(ctx, "c/x"); !errors.Is(err, context.Canceled) {
		t.Errorf("stat with a cancelled ctx: %v; want %v", err, context.Canceled)
	}
	if err := r.List(ctx, "", func(Info) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("list with a cancelled ctx: %v; want %v", err, context.Canceled)
	}
}

type cancellingReader struct {
	r      io.Reader
	n      int
	after  int
	cancel context.CancelFunc
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	if c.n >= c.after {
		c.cancel()
	}
	return n, err
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// testClaim: a cluster claims its directory once and again; a second
// cluster of the same name (another system identifier) is refused, told
// the owner's name and system identifier; another name claims its own.
func testClaim(t *testing.T, r Repository) {
	ctx := context.Background()
	shop := Owner{Cluster: "shop", SystemID: 7312345678901234567}
	if err := Claim(ctx, r, "shop", shop); err != nil {
		t.Fatal(err)
	}
	if err := Claim(ctx, r, "shop", shop); err != nil {
		t.Errorf("the owner claims again: %v", err)
	}
	o, err := ReadOwner(ctx, r, "shop")
	if err != nil || o.Cluster != "shop" || o.SystemID != shop.SystemID || o.Claimed.IsZero() {
		t.Errorf("read owner: %+v, %v", o, err)
	}
	err = Claim(ctx, r, "shop", Owner{Cluster: "shop", SystemID: 7399999999999999999})
	if err == nil || !strings.Contains(err.Error(), "shop/cluster.json belongs to cluster shop (system identifier 7312345678901234567") || !strings.Contains(err.Error(), r.String()) {
		t.Errorf("another cluster's claim: %v; want a refusal naming the owner and its system identifier", err)
	}
	if err := Claim(ctx, r, "blog", Owner{Cluster: "blog", SystemID: 1}); err != nil {
		t.Errorf("another cluster in its own directory: %v", err)
	}
	// A directory claimed under another name (a renamed cluster, or a
	// repository path shared on purpose) is refused too.
	err = Claim(ctx, r, "blog", Owner{Cluster: "shop", SystemID: 1})
	if err == nil || !strings.Contains(err.Error(), "belongs to cluster blog (system identifier 1,") {
		t.Errorf("a claim under another name: %v", err)
	}
	put(t, r, "bad/cluster.json", "{")
	if err := Claim(ctx, r, "bad", shop); err == nil || !strings.Contains(err.Error(), "bad/cluster.json is not a cluster's claim") {
		t.Errorf("a claim over a broken cluster.json: %v", err)
	}
}

// testCreate: Create stores an object whose name is free, refuses one
// that is taken (ErrExist, nothing changed), and of writers racing for one
// name exactly one wins, whose bytes are stored.
func testCreate(t *testing.T, r Repository) {
	ctx := context.Background()
	c, ok := r.(Creator)
	if !ok {
		t.Fatalf("%T is not a Creator", r)
	}
	if err := c.Create(ctx, "a/first", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, "a/first", []byte("two")); !errors.Is(err, ErrExist) {
		t.Errorf("create over an object: %v, want ErrExist", err)
	}
	if got := get(t, r, "a/first"); got != "one" {
		t.Errorf("a/first holds %q after a refused create, want one", got)
	}
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = c.Create(ctx, "a/race", []byte(fmt.Sprint("writer ", i))) })
	}
	wg.Wait()
	var won []int
	for i, err := range errs {
		switch {
		case err == nil:
			won = append(won, i)
		case !errors.Is(err, ErrExist):
			t.Errorf("writer %d: %v", i, err)
		}
	}
	if len(won) != 1 {
		t.Fatalf("%d of %d racing creates won (%v), want exactly one", len(won), n, won)
	}
	if got, want := get(t, r, "a/race"), fmt.Sprint("writer ", won[0]); got != want {
		t.Errorf("a/race holds %q, want the winner's %q", got, want)
	}
}

// testClaimRace: clusters of one name and different systems claiming the
// same empty directory at once: one wins, every other is refused with the
// winner's identifier.
func testClaimRace(t *testing.T, r Repository) {
	ctx := context.Background()
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = Claim(ctx, r, "shop", Owner{Cluster: "shop", SystemID: uint64(7300000000000000000 + i)})
		})
	}
	wg.Wait()
	o, err := ReadOwner(ctx, r, "shop")
	if err != nil {
		t.Fatal(err)
	}
	winners := 0
	for i, err := range errs {
		switch {
		case err == nil:
			winners++
			if o.SystemID != uint64(7300000000000000000+i) {
				t.Errorf("claimer %d succeeded, but the claim is %d's", i, o.SystemID)
			}
		case !errors.Is(err, ErrClaimed) || !strings.Contains(err.Error(), fmt.Sprint("system identifier ", o.SystemID)):
			t.Errorf("claimer %d: %v; want a refusal naming %d", i, err, o.SystemID)
		}
	}
	if winners != 1 {
		t.Errorf("%d of %d racing claims succeeded, want one", winners, n)
	}
}
