package repo

import (
	"fmt"
	"net/url"
	"strings"

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

// OpenNamed returns the repository of database.backup named name, or its
// first (the cluster's own) when name is empty. Every caller that reads or
// writes a cluster's backups opens its repository here, so that what
// applies to all of them applies everywhere: with encryption_key_file,
// every object is encrypted (Encrypted); without it, a repository that
// is encrypted is refused at its first operation.
func OpenNamed(b *config.Backup, name string) (Repository, error) {
	if b == nil || len(b.Repositories) == 0 {
		return nil, fmt.Errorf("repo: database.backup has no repositories: nowhere to keep backups")
	}
	var names []string
	for _, c := range b.Repositories {
		if name != "" && c.Name != name {
			names = append(names, c.Name)
			continue
		}
		r, err := Open(c)
		if err != nil {
			return nil, err
		}
		if b.EncryptionKeyFile == "" {
			return &plain{Repository: r}, nil
		}
		key, err := ReadKeyFile(b.EncryptionKeyFile)
		if err != nil {
			return nil, err
		}
		return newEncrypted(r, key, fmt.Sprintf("database.backup.encryption_key_file (%s)", b.EncryptionKeyFile))
	}
	return nil, fmt.Errorf("repo: no repository %q in database.backup.repositories (there are %s)", name, strings.Join(names, ", "))
}
