// Package repotest opens backup repositories for the tests of the
// packages that keep backups (internal/backup/wal, internal/backup/base):
// a file repository, encrypted (repo.Encrypted, with Key) when the tests
// run with HAVEN_TEST_ENCRYPT=1, so that each of those packages' tests
// can be run again on encrypted repositories:
//
//	HAVEN_TEST_ENCRYPT=1 go test ./internal/backup/...
//
// Only tests import it.
package repotest

import (
	"os"
	"path/filepath"

	"github.com/haven-ha/haven/internal/backup/repo"
)

// Key is the key test repositories are encrypted with.
var Key = []byte("haven test repository key 32 B!!")

// Encrypting reports whether HAVEN_TEST_ENCRYPT=1 asks for encrypted
// repositories.
func Encrypting() bool { return os.Getenv("HAVEN_TEST_ENCRYPT") == "1" }

// Open returns the file repository in dir, encrypted with Key when
// Encrypting, or when dir holds an encrypted repository already (a helper
// process, such as a restore_command, that a test runs on its
// repository).
func Open(dir string) (repo.Repository, error) {
	if _, err := os.Stat(filepath.Join(dir, repo.KeyCheckName)); err == nil || Encrypting() {
		return OpenEncrypted(dir)
	}
	return repo.OpenFile(dir)
}

// OpenEncrypted returns the file repository in dir encrypted with Key,
// whatever HAVEN_TEST_ENCRYPT says.
func OpenEncrypted(dir string) (repo.Repository, error) {
	r, err := repo.OpenFile(dir)
	if err != nil {
		return nil, err
	}
	return repo.Encrypted(r, Key)
}
