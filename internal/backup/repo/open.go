package repo

import (
	"fmt"
	"net/url"

	"github.com/haven-ha/haven/internal/config"
)

// Open returns the repository one entry of database.backup.repositories
// describes (config validated it): file:///PATH is a File, s3://BUCKET/PREFIX
// an S3.
func Open(c *config.BackupRepository) (Repository, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, fmt.Errorf("repo: %s: %w", c.Name, err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" {
			return nil, fmt.Errorf("repo: %s: %q: a file URL has no host: file:///ABSOLUTE/PATH", c.Name, c.URL)
		}
		return OpenFile(u.Path)
	case "s3":
		return OpenS3(S3Config{
			Bucket:          u.Host,
			Prefix:          u.Path,
			Endpoint:        c.Endpoint,
			Region:          c.Region,
			PathStyle:       c.PathStyle,
			CredentialsFile: c.CredentialsFile,
		})
	}
	return nil, fmt.Errorf("repo: %s: %q is not a file:// or s3:// URL", c.Name, c.URL)
}
