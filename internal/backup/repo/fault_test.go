package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testenv/s3server"
	"golang.org/x/sys/unix"
)

// TestS3ServerAway: a put sent while the S3 server is down is retried
// until the server is back, and then stored; a put whose ctx ends first
// fails with ctx's error, naming the repository.
func TestS3ServerAway(t *testing.T) {
	srv := s3server.Start(t, s3server.Options{})
	srv.Bucket("away")
	var refused atomic.Int64
	dialer := &net.Dialer{Timeout: time.Second}
	transport := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			refused.Add(1)
		}
		return c, err
	}}
	t.Cleanup(transport.CloseIdleConnections)
	path := true
	r, err := OpenS3(S3Config{Bucket: "away", Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: &path,
		CredentialsFile: srv.CredentialsFile(), Transport: transport})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	put(t, r, "c/before", "up")
	srv.Stop()
	transport.CloseIdleConnections()

	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	err = r.Put(short, "c/short", strings.NewReader("x"), 1)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), r.String()) {
		t.Errorf("put with a short ctx while the server is down: %v; want %v naming %s", err, context.DeadlineExceeded, r)
	}

	data := bytes.Repeat([]byte("wal"), 1<<20)
	long, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	large := bytes.Repeat([]byte("base"), 10<<20) // 40 MiB of unknown size: a multipart upload
	done := make(chan error, 2)
	before := refused.Load()
	go func() { done <- r.Put(long, "c/during", bytes.NewReader(data), int64(len(data))) }()
	go func() { done <- r.Put(long, "c/large", struct{ io.Reader }{bytes.NewReader(large)}, -1) }()
	// The server stays down until the puts have been refused 8 times
	// between them (a few seconds, the retries backing off).
	testenv.Poll(t, 30*time.Second, "the puts are refused 8 times", func() (bool, string) {
		select {
		case err := <-done:
			t.Fatalf("a put ended while the server was down: %v", err)
		default:
		}
		n := refused.Load() - before
		return n >= 8, fmt.Sprintf("refused %d times", n)
	})
	srv.Start()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatalf("a put did not succeed once the server was back: %v", err)
		}
	}
	if got := get(t, r, "c/during"); got != string(data) {
		t.Errorf("the object put during the outage reads %d bytes; want %d", len(got), len(data))
	}
	if got := get(t, r, "c/large"); got != string(large) {
		t.Errorf("the large object put during the outage reads %d bytes; want %d", len(got), len(large))
	}
	if _, err := r.Stat(ctx, "c/short"); !IsNotExist(err) {
		t.Errorf("the put that gave up was stored: %v", err)
	}
}

// TestS3VirtualHostAndEnvironment: with path_style false the bucket is in
// the host name (bucket.s3.test, which the test's dialer sends to the
// server on 127.0.0.1), and credentials come from the environment.
func TestS3VirtualHostAndEnvironment(t *testing.T) {
	srv := s3server.Start(t, s3server.Options{VirtualDomain: "s3.test"})
	srv.Bucket("vhost")
	var hosts sync.Map
	dialer := &net.Dialer{Timeout: time.Second}
	transport := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		hosts.Store(host, true)
		return dialer.DialContext(ctx, network, srv.Addr)
	}}
	t.Cleanup(transport.CloseIdleConnections)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	_, port, _ := net.SplitHostPort(srv.Addr)
	path := false
	r, err := OpenS3(S3Config{Bucket: "vhost", Prefix: "p", Endpoint: "http://s3.test:" + port, Region: srv.Region,
		PathStyle: &path, Transport: transport})
	if err != nil {
		t.Fatal(err)
	}
	put(t, r, "c/obj", "hello")
	if got := get(t, r, "c/obj"); got != "hello" {
		t.Errorf("got %q", got)
	}
	if l := list(t, r, "c/"); names(l) != "c/obj" {
		t.Errorf("listed %s", names(l))
	}
	if _, ok := hosts.Load("vhost.s3.test"); !ok {
		var seen []string
		hosts.Range(func(k, _ any) bool { seen = append(seen, k.(string)); return true })
		t.Errorf("connected to %v; want vhost.s3.test", seen)
	}
	if _, err := os.Stat(filepath.Join(srv.Dir, "vhost", "p", "c", "obj")); err != nil {
		t.Errorf("the object is not where the prefix puts it: %v", err)
	}
}

// TestS3Errors: a repository's errors name it, say what is wrong, and
// never show the secret key.
func TestS3Errors(t *testing.T) {
	srv := s3server.Start(t, s3server.Options{})
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	_, err := OpenS3(S3Config{Bucket: "b-none", Prefix: "x", Endpoint: srv.Endpoint})
	if err == nil || !strings.Contains(err.Error(), "s3://b-none/x: no credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both set") {
		t.Errorf("without credentials: %v", err)
	}
	_, err = OpenS3(S3Config{Bucket: "b-none", Endpoint: "127.0.0.1:9000", CredentialsFile: srv.CredentialsFile()})
	if err == nil || !strings.Contains(err.Error(), `endpoint "127.0.0.1:9000" is not a URL`) {
		t.Errorf("an endpoint without a scheme: %v", err)
	}
	path := true
	r, err := OpenS3(S3Config{Bucket: "b-none", Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: &path, CredentialsFile: srv.CredentialsFile()})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Put(context.Background(), "c/x", strings.NewReader("x"), 1)
	if err == nil || !strings.Contains(err.Error(), "s3://b-none: put c/x: bucket b-none does not exist") {
		t.Errorf("a put into a missing bucket: %v", err)
	}
	srv.Bucket("b-wrong")
	creds := filepath.Join(t.TempDir(), "creds")
	os.WriteFile(creds, []byte("[default]\naws_access_key_id = "+srv.AccessKey+"\naws_secret_access_key = not-"+srv.SecretKey+"\n"), 0o600)
	r, err = OpenS3(S3Config{Bucket: "b-wrong", Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: &path, CredentialsFile: creds})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Put(context.Background(), "c/x", strings.NewReader("x"), 1)
	if err == nil || !strings.Contains(err.Error(), "s3://b-wrong: put c/x:") || strings.Contains(err.Error(), srv.SecretKey) {
		t.Errorf("a put with a wrong secret: %v; want an error naming the repository, without the secret", err)
	}
	t.Logf("with a wrong secret: %v", err)
}

// TestFileFull: on a full file system a put fails saying so and naming
// the repository, leaves nothing behind, and succeeds once space is
// freed.
func TestFileFull(t *testing.T) {
	testenv.NeedRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		testenv.Need(t, false, "needs to mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	r, err := OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	big := make([]byte, 700<<10)
	if err := r.Put(ctx, "c/base/first", bytes.NewReader(big), int64(len(big))); err != nil {
		t.Fatal(err)
	}
	err = r.Put(ctx, "c/base/second", struct{ io.Reader }{bytes.NewReader(big)}, -1)
	if err == nil || !strings.Contains(err.Error(), r.String()) || !strings.Contains(err.Error(), "no space") {
		t.Fatalf("a put into a full file system: %v; want an error naming %s and saying no space", err, r)
	}
	t.Logf("full: %v", err)
	var files []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if want := filepath.Join(dir, "c/base/first"); len(files) != 1 || files[0] != want {
		t.Errorf("after the failed put the file system holds %v; want only %s", files, want)
	}
	if err := r.Delete(ctx, "c/base/first"); err != nil {
		t.Fatal(err)
	}
	if err := r.Put(ctx, "c/base/second", bytes.NewReader(big), int64(len(big))); err != nil {
		t.Fatalf("a put once space was freed: %v", err)
	}
	if got := get(t, r, "c/base/second"); len(got) != len(big) {
		t.Errorf("read back %d bytes; want %d", len(got), len(big))
	}
}
