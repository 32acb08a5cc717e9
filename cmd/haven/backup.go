package main

import (
	"context"
	"fmt"
	"io"
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
                           (exit 1 when FILE is not in the archive, which ends recovery there)

flags:
`

func runBackup(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("backup", stderr)
	fs.Usage = func() { io.WriteString(stderr, backupUsage); fs.PrintDefaults() }
	cfgPath := fs.String("c", "haven.yaml", "configuration file")
	from := fs.String("repository", "", "the repository to read (default: the first of database.backup.repositories)")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long (a restore_command must not hang recovery)")
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
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			return err
		}
		r, err := openRepository(cfg, *from)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		defer cancel()
		return wal.FetchFile(ctx, r, cfg.Cluster, pos[1], pos[2])
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
