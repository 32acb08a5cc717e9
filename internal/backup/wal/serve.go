package wal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/backup/repo"
)

// PostgreSQL runs restore_command as its own user, which should not read
// haven's configuration, its repository credentials or its encryption key,
// nor a file repository that root owns. So the WAL is fetched by a process
// of haven's that can (the agent, a restore test, the demo) and handed to
// restore_command over a unix socket that only the postgres user and root
// may open: `haven backup wal-fetch --socket PATH %f %p`.

// Handler serves cluster's archived WAL files from r: GET /wal/NAME
// answers the file whole with its length (so that a client can tell a cut
// answer), 404 when the archive has no such file, and 500 with the reason
// otherwise.
func Handler(r repo.Repository, cluster string, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		name, ok := strings.CutPrefix(req.URL.Path, "/wal/")
		if req.Method != http.MethodGet || !ok || strings.Contains(name, "/") {
			http.Error(w, "GET /wal/NAME", http.StatusNotFound)
			return
		}
		// A whole segment is 16 MiB: buffered, so that a failure half-way
		// is an error status rather than a short file.
		var buf bytes.Buffer
		err := Fetch(req.Context(), r, cluster, name, &buf)
		switch {
		case repo.IsNotExist(err):
			http.Error(w, err.Error(), http.StatusNotFound)
		case err != nil:
			log.Warn("could not fetch a WAL file for restore_command", "file", name, "err", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
			w.Write(buf.Bytes())
		}
	})
}

// ServeSocket serves Handler on a unix socket at path until ctx ends,
// made for the user owner (the user PostgreSQL runs as; empty: this
// process's own) and root alone. It returns once the socket accepts
// connections, and removes it when ctx ends.
func ServeSocket(ctx context.Context, path, owner string, h http.Handler) error {
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("wal: listen on %s: %w", path, err)
	}
	if err := ownSocket(path, owner); err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	go func() {
		<-ctx.Done()
		srv.Close()
		os.Remove(path)
	}()
	return nil
}

// FetchFromSocket is FetchFile through a ServeSocket's socket: dst is
// written whole or not at all, and the error wraps repo.ErrNotExist when
// the archive has no such file.
func FetchFromSocket(ctx context.Context, socket, name, dst string) error {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://haven/wal/"+name, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		// %v: a socket that is not there must not read as a WAL file
		// that is not there (both wrap ENOENT).
		return fmt.Errorf("wal: fetch %s through %s: %v", name, socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		err := errors.New(strings.TrimSpace(string(msg)))
		if resp.StatusCode == http.StatusNotFound {
			err = fmt.Errorf("%w: %v", repo.ErrNotExist, err)
		}
		return fmt.Errorf("wal: fetch %s through %s: %w", name, socket, err)
	}
	err = repo.WriteFile(dst, func(w io.Writer) error {
		n, err := io.Copy(w, resp.Body)
		if err == nil && n != resp.ContentLength {
			err = fmt.Errorf("got %d bytes of %d", n, resp.ContentLength)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("wal: fetch %s through %s into %s: %w", name, socket, filepath.Base(dst), err)
	}
	return nil
}

// ownSocket gives the socket at path to owner with mode 0600: only that
// user and root may connect.
func ownSocket(path, owner string) error {
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("wal: socket %s: %w", path, err)
	}
	if owner == "" {
		return nil
	}
	u, err := user.Lookup(owner)
	if err != nil {
		return fmt.Errorf("wal: socket %s for user %s: %w", path, owner, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		return fmt.Errorf("wal: socket %s for user %s: %w", path, owner, err)
	}
	return nil
}
