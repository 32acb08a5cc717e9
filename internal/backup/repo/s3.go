package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// DefaultPartSize is the size of one part of a multipart upload. An
// object of unknown size is read a part at a time into memory, so this is
// also what one Put of a stream holds; S3 allows 10,000 parts, so the
// largest object is about 160 GB.
const DefaultPartSize = 16 << 20

// DefaultRetries is how many times one request is retried after a
// transient error (a refused connection, a reset, a 5xx or a throttling
// answer), waiting between 0 and min(200ms × 2^n, 1s) before each try: a
// server that is away for about a minute is waited for. ctx ends the
// waiting earlier. A request the server refuses for good (no such bucket,
// access denied) is not retried.
const DefaultRetries = 120

// S3Config says where an S3 repository is and how to reach it.
type S3Config struct {
	// Bucket holds the repository (required).
	Bucket string
	// Prefix is the folder in the bucket that is the repository's root
	// ("" for the whole bucket); slashes around it are ignored.
	Prefix string
	// Endpoint is the server's URL, such as https://s3.eu-central-1.amazonaws.com
	// or http://127.0.0.1:7070; empty is AWS (https://s3.amazonaws.com).
	Endpoint string
	// Region is the bucket's region; empty asks the server.
	Region string
	// PathStyle addresses the bucket in the URL's path
	// (https://host/bucket/key) rather than its host name
	// (https://bucket.host/key); nil chooses as minio-go does: virtual
	// hosts for AWS and Google, paths elsewhere.
	PathStyle *bool
	// CredentialsFile is an AWS shared credentials file (an INI file whose
	// [default] section, or AWS_PROFILE's, has aws_access_key_id and
	// aws_secret_access_key). Empty: the environment's AWS_ACCESS_KEY_ID
	// and AWS_SECRET_ACCESS_KEY.
	CredentialsFile string
	// PartSize is the size of a multipart upload's parts (default
	// DefaultPartSize, at least 5 MiB as S3 requires).
	PartSize uint64
	// Retries is how many times a request is retried after a transient
	// error (default DefaultRetries).
	Retries int
	// Transport carries the requests; nil is minio-go's default.
	Transport http.RoundTripper
}

// S3 is a repository in a bucket of S3-compatible object storage, through
// minio-go. A PUT, and the completion of a multipart upload, replace an
// object atomically in S3, so a reader sees the old object or the new one;
// a multipart upload that fails is aborted, so that its parts do not stay
// stored (and billed) unseen. An upload cut short by a killed process is
// left incomplete in the bucket, where a lifecycle rule
// (AbortIncompleteMultipartUpload) removes it.
type S3 struct {
	client   *minio.Client
	bucket   string
	prefix   string // "" or "dir/", the keys' common start
	partSize uint64
	name     string
}

// OpenS3 returns the repository cfg describes. It checks that credentials
// are there but sends no request: a wrong bucket or key shows in the
// first operation's error.
func OpenS3(cfg S3Config) (*S3, error) {
	prefix := strings.Trim(cfg.Prefix, "/")
	name := "s3://" + cfg.Bucket
	if prefix != "" {
		name += "/" + prefix
		prefix += "/"
	}
	if err := s3utils.CheckValidBucketName(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("repo: %s: %w", name, err)
	}
	host, secure := "s3.amazonaws.com", true
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("repo: %s: endpoint %q is not a URL such as https://s3.eu-central-1.amazonaws.com or http://127.0.0.1:7070", name, cfg.Endpoint)
		}
		host, secure = u.Host, u.Scheme == "https"
	}
	var creds *credentials.Credentials
	if cfg.CredentialsFile != "" {
		if _, err := os.Stat(cfg.CredentialsFile); err != nil {
			return nil, fmt.Errorf("repo: %s: credentials: %w", name, err)
		}
		creds = credentials.NewFileAWSCredentials(cfg.CredentialsFile, "")
	} else {
		creds = credentials.NewEnvAWS()
	}
	v, err := creds.GetWithContext(nil)
	if err != nil || v.AccessKeyID == "" || v.SecretAccessKey == "" {
		where := "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both set"
		if cfg.CredentialsFile != "" {
			where = cfg.CredentialsFile + " has no aws_access_key_id and aws_secret_access_key"
			if p := os.Getenv("AWS_PROFILE"); p != "" {
				where += " in profile " + p
			}
		}
		return nil, fmt.Errorf("repo: %s: no credentials: %s", name, where)
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle != nil {
		lookup = minio.BucketLookupDNS
		if *cfg.PathStyle {
			lookup = minio.BucketLookupPath
		}
	}
	retries := cfg.Retries
	if retries <= 0 {
		retries = DefaultRetries
	}
	partSize := cfg.PartSize
	if partSize == 0 {
		partSize = DefaultPartSize
	}
	if partSize < 5<<20 {
		return nil, fmt.Errorf("repo: %s: part size %d is below S3's minimum of 5 MiB", name, partSize)
	}
	client, err := minio.New(host, &minio.Options{
		Creds:        creds,
		Secure:       secure,
		Region:       cfg.Region,
		BucketLookup: lookup,
		MaxRetries:   retries,
		Transport:    cfg.Transport,
	})
	if err != nil {
		return nil, fmt.Errorf("repo: %s: %w", name, err)
	}
	return &S3{client: client, bucket: cfg.Bucket, prefix: prefix, partSize: partSize, name: name}, nil
}

func (s *S3) String() string { return s.name }

// key turns an object name into the bucket's key, refusing the names a
// file repository refuses, so that a repository can be copied either way.
func (s *S3) key(name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", fmt.Errorf("repo: %s: %w", s.name, err)
	}
	return s.prefix + name, nil
}

// fail wraps err from operation op on name, naming the repository, and
// turns S3's "no such key" into ErrNotExist.
func (s *S3) fail(op, name string, err error) error {
	if r := minio.ToErrorResponse(err); r.Code == minio.NoSuchKey || (op != "list" && r.StatusCode == http.StatusNotFound && r.Code != minio.NoSuchBucket) {
		return fmt.Errorf("repo: %s: %s %s: %w", s.name, op, name, ErrNotExist)
	} else if r.Code == minio.NoSuchBucket {
		return fmt.Errorf("repo: %s: %s %s: bucket %s does not exist", s.name, op, name, s.bucket)
	}
	return fmt.Errorf("repo: %s: %s %s: %w", s.name, op, name, err)
}

func (s *S3) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	key, err := s.key(name)
	if err != nil {
		return err
	}
	single := false
	switch {
	case size >= 0 && uint64(size) <= s.partSize+s.partSize/16:
		// One PUT. minio-go retries a request only if it can read the
		// body again, so the object is read into memory first (as
		// minio-go does itself with a part, or a stream that turns out
		// small). A part and a little more (a 16 MiB WAL segment,
		// encrypted, is 4 KiB longer) is still one PUT rather than a
		// multipart upload of a part and a crumb.
		single = true
		buf, err := io.ReadAll(io.LimitReader(ctxReader{ctx, r}, size+1))
		switch {
		case err != nil:
			return s.fail("put", name, err)
		case int64(len(buf)) > size:
			return fmt.Errorf("repo: %s: put %s: %w (%d)", s.name, name, errLonger, size)
		case int64(len(buf)) < size:
			return fmt.Errorf("repo: %s: put %s: read %d bytes, want %d", s.name, name, len(buf), size)
		}
		r = bytes.NewReader(buf)
	case size >= 0:
		// minio-go reads size bytes and no more; a reader that has more
		// must fail the upload rather than be cut short unseen.
		r = &exactReader{r: r, left: size}
	}
	_, err = s.client.PutObject(ctx, s.bucket, key, r, size, minio.PutObjectOptions{
		PartSize:         s.partSize,
		DisableMultipart: single,
		ContentType:      "application/octet-stream",
	})
	if err != nil {
		return s.fail("put", name, err)
	}
	return nil
}

func (s *S3) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	key, err := s.key(name)
	if err != nil {
		return nil, err
	}
	obj, err := s.client.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.fail("get", name, err)
	}
	// GetObject sends nothing until asked: Stat sends the request, so
	// that a missing object is an error here rather than at the first
	// Read.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		return nil, s.fail("get", name, err)
	}
	return obj, nil
}

func (s *S3) Stat(ctx context.Context, name string) (Info, error) {
	key, err := s.key(name)
	if err != nil {
		return Info{}, err
	}
	oi, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return Info{}, s.fail("stat", name, err)
	}
	return Info{Name: name, Size: oi.Size, Modified: oi.LastModified}, nil
}

// List pages through the bucket's listing (1,000 keys a page); S3 lists
// keys in the byte order of their UTF-8 names, which is Go's string order.
func (s *S3) List(ctx context.Context, prefix string, fn func(Info) error) error {
	ctx, cancel := context.WithCancel(ctx) // stops the listing's goroutine when fn fails
	defer cancel()
	for oi := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
		if oi.Err != nil {
			return s.fail("list", prefix, oi.Err)
		}
		if err := fn(Info{Name: strings.TrimPrefix(oi.Key, s.prefix), Size: oi.Size, Modified: oi.LastModified}); err != nil {
			return err
		}
	}
	// The channel also closes when ctx ends, without an error.
	if err := ctx.Err(); err != nil {
		return s.fail("list", prefix, err)
	}
	return nil
}

// Delete removes the objects in batches of up to 1,000 (one DeleteObjects
// request each); S3 does not call a missing key an error.
func (s *S3) Delete(ctx context.Context, names ...string) error {
	keys := make(chan minio.ObjectInfo, len(names))
	for _, name := range names {
		key, err := s.key(name)
		if err != nil {
			return err
		}
		keys <- minio.ObjectInfo{Key: key}
	}
	close(keys)
	for e := range s.client.RemoveObjectsWithResult(ctx, s.bucket, keys, minio.RemoveObjectsOptions{}) {
		if e.Err != nil {
			return s.fail("delete", strings.TrimPrefix(e.ObjectName, s.prefix), e.Err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("repo: %s: delete: %w", s.name, err)
	}
	return nil
}

// exactReader gives left bytes of r and then EOF, or an error if r has
// more or fewer: minio-go stops reading at the size it was told, and would
// store the first size bytes of a longer reader.
type exactReader struct {
	r    io.Reader
	left int64
}

var errLonger = errors.New("the reader has more bytes than the size given")

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	switch {
	case e.left == 0:
		// The last byte: look for one more now, since minio-go will not
		// read again; and hand out none of this read's bytes if there is
		// one, since io.ReadFull forgets an error that comes with the
		// bytes it wanted.
		var one [1]byte
		if m, _ := io.ReadFull(e.r, one[:]); m > 0 {
			return 0, errLonger
		}
		return n, io.EOF
	case err == io.EOF:
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

// Create stores b under name with a conditional PUT (If-None-Match: *),
// which the server refuses (412) when an object has the name. A server
// that does not implement conditional writes (501) gets a plain PUT: the
// object is then written whether or not one was there.
func (s *S3) Create(ctx context.Context, name string, b []byte) error {
	key, err := s.key(name)
	if err != nil {
		return err
	}
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream"}
	opts.SetMatchETagExcept("*")
	_, err = s.client.PutObject(ctx, s.bucket, key, bytes.NewReader(b), int64(len(b)), opts)
	switch r := minio.ToErrorResponse(err); {
	case err == nil:
		return nil
	case r.StatusCode == http.StatusPreconditionFailed || r.Code == "PreconditionFailed":
		return fmt.Errorf("repo: %s: create %s: %w", s.name, name, ErrExist)
	case r.StatusCode == http.StatusNotImplemented:
		return s.Put(ctx, name, bytes.NewReader(b), int64(len(b)))
	}
	return s.fail("create", name, err)
}
