package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/haven-ha/haven/internal/config"
)

const backupUsage = `usage: haven backup ACTION [flags] [ARGS]

actions:
  wal-fetch FILE PATH      write WAL segment or history file FILE from the archive to PATH:
                           PostgreSQL's restore_command, as
                           restore_command = 'haven backup wal-fetch -c /etc/haven/haven.yaml %f %p'
                           or, run by the postgres user, through a socket of haven's (--socket)
                           exit 1 when FILE is not in the archive, which ends recovery there;
                           exit 126 when the archive could not be read, which stops recovery
                           rather than end it early at the wrong point

flags:
`

func runBackup(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("backup", stderr)
	fs.Usage = func() { io.WriteString(stderr, backupUsage); fs.PrintDefaults() }
	cfgPath := fs.String("c", "haven.yaml", "configuration file")
	from := fs.String("repository", "", "the repository to read (default: the first of database.backup.repositories)")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long (a restore_command must not hang recovery)")
	socket := fs.String("socket", "", "wal-fetch: fetch through this unix socket, served by haven for the postgres user, instead of reading the repository (no -c)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return parseError(err)
	}
	if len(pos) == 0 {
		fs.Usage()
		return errUsage
	}
	switch pos[0] {
	case "wal-fetch":
		if len(pos) != 3 {
			fs.Usage()
			return errUsage
		}
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		return walFetch(ctx, *cfgPath, *from, *socket, pos[1], pos[2])
	}
	fs.Usage()
	return errUsage
}

// openRepository opens the repository named name of cfg's database
// backups, or the first one when name is empty.
func openRepository(cfg *config.Config, name string) (repo.Repository, error) {
	if cfg.Database == nil || cfg.Database.Backup == nil {
		return nil, fmt.Errorf("%s has no database.backup: nowhere to read backups from", cfg.File)
	}
	return repo.OpenNamed(cfg.Database.Backup, name)
}

// walFetch is restore_command: WAL file name into dst, from the repository
// or through socket. A file the archive does not have exits 1, which ends
// recovery there; any other failure exits 126, which PostgreSQL takes as
// fatal: a restore that could not read the archive must stop, not promote
// at an earlier point than asked for. A standby (restore_command runs in
// its data directory, which holds standby.signal) exits 1 for those too:
// it never promotes on its own, and tries streaming and the archive again.
func walFetch(ctx context.Context, cfgPath, repository, socket, name, dst string) error {
	var err error
	if socket != "" {
		err = wal.FetchFromSocket(ctx, socket, name, dst)
	} else {
		err = fetchFromRepository(ctx, cfgPath, repository, name, dst)
	}
	if _, serr := os.Stat("standby.signal"); err != nil && !repo.IsNotExist(err) && serr != nil {
		return codedError{code: 126, err: err}
	}
	return err
}

func fetchFromRepository(ctx context.Context, cfgPath, repository, name, dst string) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	r, err := openRepository(cfg, repository)
	if err != nil {
		return err
	}
	return wal.FetchFile(ctx, r, cfg.Cluster, name, dst)
}
