package repo

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/haven-ha/haven/internal/testenv/s3server"
)

// openS3 returns a repository in a fresh bucket of srv, under a prefix.
func openS3(t *testing.T, srv *s3server.Server) *S3 {
	t.Helper()
	bucket := fmt.Sprintf("bucket-%d", buckets.Add(1))
	srv.Bucket(bucket)
	path := true
	r, err := OpenS3(S3Config{
		Bucket:          bucket,
		Prefix:          "/backups/",
		Endpoint:        srv.Endpoint,
		Region:          srv.Region,
		PathStyle:       &path,
		CredentialsFile: srv.CredentialsFile(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var buckets atomic.Int64

// TestS3 runs the conformance tests on an S3 repository in a real S3
// server (versitygw), and checks that a failed multipart upload leaves no
// incomplete upload behind.
func TestS3(t *testing.T) {
	srv := s3server.Start(t, s3server.Options{})
	conformance(t, func(t *testing.T) Repository {
		r := openS3(t, srv)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("versitygw's log:\n%s", srv.Log())
			}
			for u := range r.client.ListIncompleteUploads(context.Background(), r.bucket, "", true) {
				if u.Err != nil {
					t.Errorf("list incomplete uploads: %v", u.Err)
					break
				}
				t.Errorf("an incomplete multipart upload was left behind: %s", u.Key)
			}
		})
		return r
	})
}
