package repo

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/testenv/s3server"
)

// TestOpen: the repositories of a haven.yaml open as what their URLs say,
// and work: the target shorthand, a directory, and an S3 bucket.
func TestOpen(t *testing.T) {
	srv := s3server.Start(t, s3server.Options{})
	srv.Bucket("shop-backups")
	dir := t.TempDir()
	creds := srv.CredentialsFile()
	yaml := `cluster: shop
regions: {east: {nodes: {db1: {address: 198.18.1.21}}}}
coordination: {members: [db1]}
database:
  nodes: [db1]
  backup:
    repositories:
      - {name: local, url: "file://` + dir + `/backups"}
      - name: west
        url: s3://shop-backups/haven/
        endpoint: ` + srv.Endpoint + `
        region: ` + srv.Region + `
        path_style: true
        credentials_file: ` + creds + `
`
	path := filepath.Join(dir, "haven.yaml")
	os.WriteFile(path, []byte(yaml), 0o600)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, rc := range cfg.Database.Backup.Repositories {
		r, err := Open(rc)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.String())
		put(t, r, "shop/wal/1", "one")
		if b := get(t, r, "shop/wal/1"); b != "one" {
			t.Errorf("%s: got %q", r, b)
		}
	}
	if want := "file://" + dir + "/backups s3://shop-backups/haven"; strings.Join(got, " ") != want {
		t.Errorf("opened %v; want %s", got, want)
	}
	if _, err := os.Stat(filepath.Join(srv.Dir, "shop-backups/haven/shop/wal/1")); err != nil {
		t.Errorf("the object is not under the bucket's prefix: %v", err)
	}

	os.WriteFile(path, []byte(strings.SplitAfter(yaml, "  backup:\n")[0]+"    target: file://"+dir+"/target\n"), 0o600)
	cfg, err = config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	rs := cfg.Database.Backup.Repositories
	if len(rs) != 1 || rs[0].Name != "main" {
		t.Fatalf("target made %+v; want one repository named main", rs)
	}
	r, err := Open(rs[0])
	if err != nil || r.String() != "file://"+dir+"/target" {
		t.Fatalf("open target: %v, %v", r, err)
	}
	if err := r.Put(context.Background(), "shop/x", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
}
