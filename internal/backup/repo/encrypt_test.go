package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/testenv/s3server"
)

var (
	testKey  = bytes.Repeat([]byte{7}, KeySize)
	otherKey = bytes.Repeat([]byte{8}, KeySize)
)

func encrypt(t *testing.T, r Repository, key []byte) Repository {
	t.Helper()
	e, err := Encrypted(r, key)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func openFile(t *testing.T) Repository {
	t.Helper()
	r, err := OpenFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestEncryptedFile runs the conformance tests, and the encryption's own,
// on an encrypted file repository.
func TestEncryptedFile(t *testing.T) {
	conformance(t, func(t *testing.T) Repository { return encrypt(t, openFile(t), testKey) })
	encryption(t, openFile)
}

// TestEncryptedS3 runs them on an encrypted repository in a real S3
// server (versitygw).
func TestEncryptedS3(t *testing.T) {
	srv := s3server.Start(t, s3server.Options{})
	conformance(t, func(t *testing.T) Repository { return encrypt(t, openS3(t, srv), testKey) })
	encryption(t, func(t *testing.T) Repository { return openS3(t, srv) })
}

// encryption runs the tests of Encrypted over fresh, empty repositories
// that open returns.
func encryption(t *testing.T, open func(t *testing.T) Repository) {
	t.Run("Sizes", func(t *testing.T) { testEncryptedSizes(t, open(t)) })
	t.Run("Damage", func(t *testing.T) { testEncryptedDamage(t, open(t)) })
	t.Run("WrongKey", func(t *testing.T) { testWrongKey(t, open(t)) })
	t.Run("Unencrypted", func(t *testing.T) { testUnencrypted(t, open(t), open(t)) })
	t.Run("Copy", func(t *testing.T) { testEncryptedCopy(t, open(t), open(t)) })
}

// pattern is n bytes that differ from chunk to chunk.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + i>>16)
	}
	return b
}

// raw reads an object as stored.
func raw(t *testing.T, r Repository, name string) []byte {
	t.Helper()
	rc, err := r.Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func putRaw(t *testing.T, r Repository, name string, b []byte) {
	t.Helper()
	if err := r.Put(context.Background(), name, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
}

// testEncryptedSizes: objects of every size around a chunk's, put with
// their size and without, read back whole; Stat and List report the
// plaintext's size; what is stored is the sealed size, and holds none of
// the plaintext.
func testEncryptedSizes(t *testing.T, under Repository) {
	ctx := context.Background()
	e := encrypt(t, under, testKey)
	for _, n := range []int{0, 1, 100, encChunk - 1, encChunk, encChunk + 1, 3 * encChunk, 16 << 20, 5<<20 + 7} {
		data := pattern(n)
		for _, known := range []bool{true, false} {
			name := fmt.Sprintf("c/obj-%d-%v", n, known)
			size := int64(-1)
			if known {
				size = int64(n)
			}
			if err := e.Put(ctx, name, struct{ io.Reader }{bytes.NewReader(data)}, size); err != nil {
				t.Fatalf("put %d bytes: %v", n, err)
			}
			if got := get(t, e, name); got != string(data) {
				t.Errorf("%s: read back %d bytes that differ from the %d put", name, len(got), n)
			}
			st, err := e.Stat(ctx, name)
			if err != nil || st.Size != int64(n) {
				t.Errorf("stat %s: %d bytes, %v; want %d", name, st.Size, err, n)
			}
			stored := raw(t, under, name)
			if int64(len(stored)) != sealedSize(int64(n)) || openedSize(int64(len(stored))) != int64(n) {
				t.Errorf("%s: stored %d bytes; want %d", name, len(stored), sealedSize(int64(n)))
			}
			if n >= 64 && bytes.Contains(stored, data[:64]) {
				t.Errorf("%s: the stored object holds the plaintext", name)
			}
		}
	}
	for _, i := range list(t, e, "c/") {
		var n int64
		fmt.Sscanf(strings.TrimPrefix(i.Name, "c/obj-"), "%d", &n)
		if i.Size != n {
			t.Errorf("listed %s with %d bytes; want %d", i.Name, i.Size, n)
		}
	}
	if l := names(list(t, e, "")); strings.Contains(l, KeyCheckName) {
		t.Errorf("the key check is listed: %s", l)
	}
	if l := names(list(t, under, "")); !strings.Contains(l, KeyCheckName) {
		t.Errorf("the repository has no key check after a put: %s", l)
	}
	if err := e.Put(ctx, KeyCheckName, strings.NewReader("x"), 1); err == nil {
		t.Error("a put over the key check was accepted")
	}
	if err := e.Delete(ctx, "c/obj-0-true", KeyCheckName); err == nil {
		t.Error("a delete of the key check was accepted")
	}
}

// testEncryptedDamage: a flipped byte anywhere, a cut (inside a chunk, at
// a chunk's boundary, inside the header), bytes added, chunks swapped, an
// object stored under another name, and an object not encrypted: each
// read fails, naming the object, and gives none of a damaged chunk.
func testEncryptedDamage(t *testing.T, under Repository) {
	ctx := context.Background()
	e := encrypt(t, under, testKey)
	data := pattern(3*encChunk + 1000) // four chunks, the last short
	exact := pattern(2 * encChunk)     // two chunks, the last full
	if err := e.Put(ctx, "c/obj", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if err := e.Put(ctx, "c/exact", bytes.NewReader(exact), int64(len(exact))); err != nil {
		t.Fatal(err)
	}
	if err := e.Put(ctx, "c/other", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	good, goodExact, other := raw(t, under, "c/obj"), raw(t, under, "c/exact"), raw(t, under, "c/other")
	flip := func(b []byte, at int) []byte { b = bytes.Clone(b); b[at] ^= 0x10; return b }
	chunk := encChunk + encTag
	swapped := bytes.Clone(good)
	copy(swapped[encHeader:], good[encHeader+chunk:encHeader+2*chunk])
	copy(swapped[encHeader+chunk:], good[encHeader:encHeader+chunk])
	for _, tc := range []struct {
		what   string
		name   string
		stored []byte
		want   string
	}{
		{"a byte flipped in the magic", "c/obj", flip(good, 3), "is not encrypted"},
		{"a byte flipped in the salt", "c/obj", flip(good, encHeader-1), "chunk 0 (bytes 40 to 65592) does not decrypt"},
		{"a byte flipped in the first chunk", "c/obj", flip(good, encHeader+10), "chunk 0 (bytes 40 to 65592) does not decrypt"},
		{"a byte flipped in a tag", "c/obj", flip(good, encHeader+2*chunk-1), "chunk 1 (bytes 65592 to 131144) does not decrypt"},
		{"a byte flipped in the last chunk", "c/obj", flip(good, len(good)-100), "chunk 3 "},
		{"the last chunk cut off at a chunk's boundary", "c/obj", good[:encHeader+3*chunk], "is cut short: it ends after chunk 2"},
		{"the last full chunk cut off", "c/exact", goodExact[:encHeader+chunk], "is cut short: it ends after chunk 0"},
		{"a cut inside a chunk", "c/obj", good[:encHeader+chunk+500], "chunk 1 "},
		{"a cut inside the last chunk", "c/obj", good[:len(good)-1], "chunk 3 "},
		{"a cut inside a tag", "c/obj", good[:encHeader+3*chunk+5], "is cut short: 5 bytes at byte"},
		{"a cut inside the header", "c/obj", good[:20], "is cut short: 20 bytes"},
		{"nothing left", "c/obj", nil, "is cut short: 0 bytes"},
		{"only the header", "c/obj", good[:encHeader], "is cut short: 0 bytes at byte 40"},
		{"a byte added", "c/obj", append(bytes.Clone(good), 0), "chunk 3 "},
		{"a chunk added", "c/exact", append(bytes.Clone(goodExact), goodExact[encHeader:encHeader+chunk]...), "chunk 1 "},
		{"two chunks swapped", "c/obj", swapped, "chunk 0 "},
		{"another object's contents", "c/obj2", other, "was not written under this name with this key"},
		{"an object not encrypted", "c/plain", data, "is not encrypted"},
	} {
		putRaw(t, under, tc.name, tc.stored)
		rc, err := e.Get(ctx, tc.name)
		var got []byte
		if err == nil {
			got, err = io.ReadAll(rc)
			rc.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.name) || !strings.Contains(err.Error(), e.String()) {
			t.Errorf("%s: read %v; want an error naming %s in %s, saying %q", tc.what, err, tc.name, e, tc.want)
		}
		if len(got) > len(data) || !bytes.Equal(got, data[:len(got)]) {
			t.Errorf("%s: %d bytes were read that were not put", tc.what, len(got))
		}
		putRaw(t, under, "c/obj", good)
		putRaw(t, under, "c/exact", goodExact)
	}
	if got := get(t, e, "c/obj"); got != string(data) {
		t.Error("the object restored does not read back")
	}
}

// testWrongKey: a repository encrypted with one key, opened with another,
// fails every operation with an error that says so, and is left as it
// was: nothing written, nothing deleted.
func testWrongKey(t *testing.T, under Repository) {
	ctx := context.Background()
	put(t, encrypt(t, under, testKey), "shop/wal/1", "one")
	before := list(t, under, "")
	check := raw(t, under, KeyCheckName)

	wrong := encrypt(t, under, otherKey)
	want := "the key does not decrypt repository " + under.String() + " (it was encrypted with another key)"
	var errs []error
	errs = append(errs, wrong.Put(ctx, "shop/wal/2", strings.NewReader("two"), 3))
	errs = append(errs, wrong.Put(ctx, "shop/wal/3", strings.NewReader("three"), -1))
	_, err := wrong.Get(ctx, "shop/wal/1")
	errs = append(errs, err)
	_, err = wrong.Stat(ctx, "shop/wal/1")
	errs = append(errs, err)
	errs = append(errs, wrong.List(ctx, "", func(Info) error { return nil }))
	errs = append(errs, wrong.Delete(ctx, "shop/wal/1"))
	for i, err := range errs {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("operation %d with the wrong key: %v; want %q", i, err, want)
		}
	}
	if after := list(t, under, ""); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the repository changed under the wrong key: %v, before %v", after, before)
	}
	if !bytes.Equal(raw(t, under, KeyCheckName), check) {
		t.Error("the key check changed under the wrong key")
	}
	if got := get(t, encrypt(t, under, testKey), "shop/wal/1"); got != "one" {
		t.Errorf("the right key reads %q", got)
	}
}

// testUnencrypted: a repository written without a key is refused to a
// key, and one written with a key is refused without one, before either
// writes anything; an empty repository opened with a key is read without
// writing, and gets its key check with the first put.
func testUnencrypted(t *testing.T, plainRepo, empty Repository) {
	ctx := context.Background()
	put(t, &plain{Repository: plainRepo}, "shop/wal/1", "one")
	e, err := newEncrypted(plainRepo, testKey, "database.backup.encryption_key_file (/k)")
	if err != nil {
		t.Fatal(err)
	}
	err = e.Put(ctx, "shop/wal/2", strings.NewReader("two"), 3)
	if want := "database.backup.encryption_key_file (/k): repository " + plainRepo.String() + " holds objects written without encryption (such as shop/wal/1)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("a key on an unencrypted repository: %v; want %q", err, want)
	}
	if _, err := e.Get(ctx, "shop/wal/1"); err == nil {
		t.Error("a key on an unencrypted repository reads")
	}
	if l := names(list(t, plainRepo, "")); l != "shop/wal/1" {
		t.Errorf("the unencrypted repository lists %s after a put with a key", l)
	}

	enc := encrypt(t, empty, testKey)
	if l := list(t, enc, ""); len(l) != 0 {
		t.Errorf("an empty repository lists %s", names(l))
	}
	if _, err := enc.Stat(ctx, "shop/wal/1"); !IsNotExist(err) {
		t.Errorf("stat in an empty repository: %v", err)
	}
	if l := names(list(t, empty, "")); l != "" {
		t.Errorf("reads of an empty repository wrote %s", l)
	}
	put(t, enc, "shop/wal/1", "one")
	if l := names(list(t, empty, "")); l != KeyCheckName+" shop/wal/1" {
		t.Errorf("after the first put the repository holds %s", l)
	}
	p := &plain{Repository: empty}
	err = p.Put(ctx, "shop/wal/2", strings.NewReader("two"), 3)
	if want := "repo: " + empty.String() + " is encrypted (it holds encryption.check): set database.backup.encryption_key_file"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("no key on an encrypted repository: %v; want %q", err, want)
	}
	if _, err := p.Get(ctx, "shop/wal/1"); err == nil {
		t.Error("no key on an encrypted repository reads")
	}
	if err := p.List(ctx, "", func(Info) error { return nil }); err == nil {
		t.Error("no key on an encrypted repository lists")
	}
	if l := names(list(t, empty, "")); l != KeyCheckName+" shop/wal/1" {
		t.Errorf("after a put without the key the repository holds %s", l)
	}
}

// testEncryptedCopy: a copy between two encrypted repositories holds what
// the first does, and a second copy finds every size equal.
func testEncryptedCopy(t *testing.T, a, b Repository) {
	ctx := context.Background()
	src, dst := encrypt(t, a, testKey), encrypt(t, b, testKey)
	put(t, src, "shop/base/1/manifest.json", "{}")
	big := pattern(encChunk*2 + 3)
	if err := src.Put(ctx, "shop/base/1/big", bytes.NewReader(big), -1); err != nil {
		t.Fatal(err)
	}
	st, err := Copy(ctx, dst, src, "shop/")
	if err != nil || st.Copied != 2 || st.Bytes != int64(len(big))+2 {
		t.Fatalf("copy: %+v, %v", st, err)
	}
	if got := get(t, dst, "shop/base/1/big"); got != string(big) {
		t.Error("the copy differs")
	}
	if st, err := Copy(ctx, dst, src, "shop/"); err != nil || st.Copied != 0 || st.Skipped != 2 {
		t.Errorf("second copy: %+v, %v; want all skipped", st, err)
	}
}

// TestEncryptedStreams: a put and a get hold about one chunk of the
// object in memory, not the whole: the encrypted repository reads its
// source no further ahead of what the store has taken than a chunk, and
// the store no further ahead of what the reader has read.
func TestEncryptedStreams(t *testing.T) {
	const size = 64 << 20
	under := &streamRepo{}
	e := encrypt(t, under, testKey)
	src := &countingReader{r: bytes.NewReader(pattern(size))}
	under.src = src
	if err := e.Put(context.Background(), "c/big", src, size); err != nil {
		t.Fatal(err)
	}
	if under.ahead > encChunk+1 {
		t.Errorf("the source was read up to %d bytes ahead of the store; want at most a chunk", under.ahead)
	}
	rc, err := e.Get(context.Background(), "c/big")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	h := sha256.New()
	buf := make([]byte, 4096)
	var read, ahead int64
	for {
		n, err := rc.Read(buf)
		h.Write(buf[:n])
		read += int64(n)
		ahead = max(ahead, under.got.n-read)
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if want := sha256.Sum256(pattern(size)); read != size || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Errorf("read back %d bytes that differ", read)
	}
	if ahead > 2*(encChunk+encTag)+int64(encHeader) {
		t.Errorf("the stored object was read up to %d bytes ahead of the reader; want about a chunk", ahead)
	}
}

// streamRepo stores one object, hashing it as it goes (keeping only its
// hash's state and a copy for Get), and records how far its source got
// ahead of it.
type streamRepo struct {
	Repository
	src    *countingReader
	stored []byte
	check  []byte
	ahead  int64
	got    *countingReader
}

func (s *streamRepo) String() string                                       { return "stream://" }
func (s *streamRepo) List(context.Context, string, func(Info) error) error { return nil }
func (s *streamRepo) Put(_ context.Context, name string, r io.Reader, size int64) error {
	if name == KeyCheckName {
		b, err := io.ReadAll(r)
		s.check = b
		return err
	}
	var out bytes.Buffer
	buf := make([]byte, 1000)
	for {
		n, err := r.Read(buf)
		out.Write(buf[:n])
		s.ahead = max(s.ahead, s.src.n-plainUpTo(int64(out.Len())))
		if err == io.EOF {
			break
		} else if err != nil {
			return err
		}
	}
	if int64(out.Len()) != size {
		return fmt.Errorf("put %d bytes, announced %d", out.Len(), size)
	}
	s.stored = out.Bytes()
	return nil
}

func (s *streamRepo) Get(_ context.Context, name string) (io.ReadCloser, error) {
	if name == KeyCheckName {
		if s.check == nil {
			return nil, fmt.Errorf("get %s: %w", name, ErrNotExist)
		}
		return io.NopCloser(bytes.NewReader(s.check)), nil
	}
	s.got = &countingReader{r: bytes.NewReader(s.stored)}
	return io.NopCloser(s.got), nil
}

// plainUpTo is how much plaintext the first n stored bytes hold whole.
func plainUpTo(n int64) int64 {
	return max(n-int64(encHeader), 0) / (encChunk + encTag) * encChunk
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestOpenNamedEncrypted: with database.backup.encryption_key_file, the
// repositories a haven.yaml names are encrypted with its key; a file with
// another key is refused, naming the file and the repository, and writes
// nothing; without the key file, the encrypted repository is refused; a
// key file that holds no key is refused when opened.
func TestOpenNamedEncrypted(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "backup.key")
	os.WriteFile(keyFile, []byte("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n"), 0o600) // 32 × 7: testKey
	b := &config.Backup{
		Repositories:      []*config.BackupRepository{{Name: "local", URL: "file://" + dir + "/backups"}},
		EncryptionKeyFile: keyFile,
	}
	r, err := OpenNamed(b, "local")
	if err != nil {
		t.Fatal(err)
	}
	put(t, r, "shop/wal/1", "one")
	under, err := OpenFile(dir + "/backups")
	if err != nil {
		t.Fatal(err)
	}
	if got := get(t, encrypt(t, under, testKey), "shop/wal/1"); got != "one" {
		t.Errorf("read with the key file's key: %q", got)
	}
	if stored := raw(t, under, "shop/wal/1"); !bytes.HasPrefix(stored, []byte(encMagic)) {
		t.Errorf("stored %q: not encrypted", stored)
	}

	os.WriteFile(keyFile, []byte("CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=\n"), 0o600) // otherKey
	r, err = OpenNamed(b, "")
	if err != nil {
		t.Fatal(err)
	}
	err = r.Put(context.Background(), "shop/wal/2", strings.NewReader("two"), 3)
	want := "database.backup.encryption_key_file (" + keyFile + "): the key does not decrypt repository file://" + dir + "/backups (it was encrypted with another key)"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("the wrong key: %v; want %q", err, want)
	}
	if l := names(list(t, under, "")); l != KeyCheckName+" shop/wal/1" {
		t.Errorf("the wrong key left %s", l)
	}

	b.EncryptionKeyFile = ""
	r, err = OpenNamed(b, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(context.Background(), "shop/wal/1"); err == nil || !strings.Contains(err.Error(), "is encrypted") {
		t.Errorf("no key on an encrypted repository: %v", err)
	}

	for _, bad := range []string{"", "0123456789abcdef0123456789abcdef\n", "not base64 at all!"} {
		os.WriteFile(keyFile, []byte(bad), 0o600)
		b.EncryptionKeyFile = keyFile
		_, err := OpenNamed(b, "")
		if err == nil || !strings.Contains(err.Error(), keyFile+" does not hold a key: it must hold 32 random bytes in base64") {
			t.Errorf("key file %q: %v", bad, err)
		}
	}
	if _, err := Encrypted(under, testKey[:16]); err == nil || !strings.Contains(err.Error(), "has 16 bytes; AES-256 needs 32") {
		t.Errorf("a 16-byte key: %v; want it refused", err)
	}
	if _, err := ParseKey([]byte(" BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc= \n")); err != nil {
		t.Errorf("a key with spaces around: %v", err)
	}
}

// TestS3EncryptedSegmentOnePut: a WAL segment (16 MiB, a part), encrypted
// a little longer than a part, is still sent as one PUT, not as a
// multipart upload of a part and a crumb.
func TestS3EncryptedSegmentOnePut(t *testing.T) {
	srv := s3server.Start(t, s3server.Options{})
	srv.Bucket("segments")
	var mu sync.Mutex
	var reqs []string
	transport := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		mu.Lock()
		reqs = append(reqs, req.Method+" "+req.URL.RawQuery)
		mu.Unlock()
		return http.DefaultTransport.RoundTrip(req)
	})
	path := true
	s3, err := OpenS3(S3Config{Bucket: "segments", Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: &path,
		CredentialsFile: srv.CredentialsFile(), Transport: transport})
	if err != nil {
		t.Fatal(err)
	}
	e := encrypt(t, s3, testKey)
	put(t, e, "shop/wal/0", "first") // stores the key check
	mu.Lock()
	reqs = nil
	mu.Unlock()
	seg := pattern(DefaultPartSize)
	if err := e.Put(context.Background(), "shop/wal/000000010000000000000001", bytes.NewReader(seg), int64(len(seg))); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reqs) != 1 || reqs[0] != "PUT " {
		t.Errorf("an encrypted segment was sent as %q; want one PUT", reqs)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// BenchmarkEncrypted measures Put and Get of a 64 MiB object of unknown
// size (as a base backup's compressed stream is) on a file repository,
// without encryption and with it, and sealing and opening alone. Besides
// the wall-clock MB/s it reports cpu-MB/s: bytes per second of this
// process's CPU time (user and system), which other work on a busy
// machine disturbs less.
//
//	go test -run '^$' -bench Encrypted -benchtime 20x ./internal/backup/repo
func BenchmarkEncrypted(b *testing.B) {
	const size = 64 << 20
	data := pattern(size)
	ctx := context.Background()
	loop := func(b *testing.B, fn func() error) {
		b.SetBytes(size)
		cpu0 := cpuTime()
		for b.Loop() {
			if err := fn(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(size)*float64(b.N)/1e6/(cpuTime()-cpu0).Seconds(), "cpu-MB/s")
	}
	for _, tc := range []struct {
		name string
		wrap func(Repository) Repository
	}{
		{"plain", func(r Repository) Repository { return r }},
		{"encrypted", func(r Repository) Repository { e, _ := Encrypted(r, testKey); return e }},
	} {
		under, err := OpenFile(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		r := tc.wrap(under)
		b.Run("file/put/"+tc.name, func(b *testing.B) {
			loop(b, func() error { return r.Put(ctx, "c/big", struct{ io.Reader }{bytes.NewReader(data)}, -1) })
		})
		b.Run("file/get/"+tc.name, func(b *testing.B) {
			loop(b, func() error { return readAll(ctx, r, "c/big", size) })
		})
	}
	e, _ := newEncrypted(&streamRepo{}, testKey, "")
	b.Run("seal", func(b *testing.B) {
		loop(b, func() error {
			_, err := io.Copy(io.Discard, e.seal("c/big", bytes.NewReader(data), size))
			return err
		})
	})
	var sealed bytes.Buffer
	io.Copy(&sealed, e.seal("c/big", bytes.NewReader(data), size))
	b.Run("open", func(b *testing.B) {
		loop(b, func() error {
			o := e.open("c/big", io.NopCloser(bytes.NewReader(sealed.Bytes())))
			defer o.Close()
			_, err := io.Copy(io.Discard, o)
			return err
		})
	})
}

func readAll(ctx context.Context, r Repository, name string, size int64) error {
	rc, err := r.Get(ctx, name)
	if err != nil {
		return err
	}
	defer rc.Close()
	if n, err := io.Copy(io.Discard, rc); err != nil || n != size {
		return fmt.Errorf("read %d bytes, %v; want %d", n, err, size)
	}
	return nil
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// FuzzOpen reads arbitrary bytes as an encrypted object: the read never
// panics, fails naming the object, and succeeds only on an object sealed
// under the key and name, such as the seeds (anything else would be a
// forgery): it then gives what was sealed, a pattern of its length.
func FuzzOpen(f *testing.F) {
	e, err := newEncrypted(&streamRepo{}, testKey, "")
	if err != nil {
		f.Fatal(err)
	}
	for _, n := range []int{0, 1, encChunk, encChunk + 100} {
		var b bytes.Buffer
		if _, err := io.Copy(&b, e.seal("c/obj", bytes.NewReader(pattern(n)), int64(n))); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
		f.Add(b.Bytes()[:b.Len()-1])
	}
	f.Fuzz(func(t *testing.T, stored []byte) {
		o := e.open("c/obj", io.NopCloser(bytes.NewReader(stored)))
		got, err := io.ReadAll(o)
		o.Close()
		switch {
		case err == nil && !bytes.Equal(got, pattern(len(got))):
			t.Fatalf("%d stored bytes read as %d bytes that were never sealed", len(stored), len(got))
		case err == nil && int64(len(stored)) != sealedSize(int64(len(got))):
			t.Fatalf("%d stored bytes read as %d bytes, which seal to %d", len(stored), len(got), sealedSize(int64(len(got))))
		case err != nil && !strings.Contains(err.Error(), "c/obj"):
			t.Fatalf("the error does not name the object: %v", err)
		}
	})
}

// TestEncryptedRace: a process that finds an empty repository, while
// another stores its key check with another key before the first lists
// it, is refused as a wrong key, and writes nothing.
func TestEncryptedRace(t *testing.T) {
	under := openFile(t)
	other := encrypt(t, under, otherKey)
	hooked := &listHook{Repository: under, before: func() { put(t, other, "shop/wal/1", "theirs") }}
	mine := encrypt(t, hooked, testKey)
	err := mine.Put(context.Background(), "shop/wal/2", strings.NewReader("mine"), 4)
	if err == nil || !strings.Contains(err.Error(), "the key does not decrypt repository") {
		t.Errorf("a put as another key's check appears: %v; want the wrong key", err)
	}
	if l := names(list(t, under, "")); l != KeyCheckName+" shop/wal/1" {
		t.Errorf("the repository holds %s", l)
	}
}

// listHook runs before once, at the first List.
type listHook struct {
	Repository
	before func()
	once   sync.Once
}

func (l *listHook) List(ctx context.Context, prefix string, fn func(Info) error) error {
	l.once.Do(l.before)
	return l.Repository.List(ctx, prefix, fn)
}
