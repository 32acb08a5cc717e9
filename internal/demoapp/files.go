package demoapp

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
)

// maxUpload bounds one uploaded file.
const maxUpload = 10 << 20

// fileName is an uploaded file's name: one path element, no dots first.
var fileName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// UseFiles keeps uploaded files in dir (a replicated volume's mount, in the
// demo): PUT /files/NAME stores the body, GET /files/NAME serves it.
func (a *App) UseFiles(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("demoapp: files: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("demoapp: files: %s is not a directory", dir)
	}
	a.files = dir
	return nil
}

// putFile stores an upload: written beside its name, synced, renamed
// into place, so that a reader never sees half of it. 201 once it is
// durable, with the server that stored it.
func (a *App) putFile(w http.ResponseWriter, r *http.Request) {
	p, ok := a.filePath(w, r)
	if !ok {
		return
	}
	tmp := p + ".upload"
	f, err := os.Create(tmp)
	if err != nil {
		http.Error(w, "files: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	n, err := io.Copy(f, http.MaxBytesReader(w, r.Body, maxUpload))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		http.Error(w, "files: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, "{\"name\":%q,\"bytes\":%d,\"stored_by\":%q}\n", filepath.Base(p), n, a.Name)
}

// getFile serves an uploaded file.
func (a *App) getFile(w http.ResponseWriter, r *http.Request) {
	p, ok := a.filePath(w, r)
	if !ok {
		return
	}
	f, err := os.Open(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		http.Error(w, "no such file", http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, "files: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	if _, err := io.Copy(w, f); err != nil {
		return // the client sees a short body
	}
}

func (a *App) filePath(w http.ResponseWriter, r *http.Request) (string, bool) {
	if a.files == "" {
		http.Error(w, a.Name+" keeps no files (haven backend --files DIR)", http.StatusNotFound)
		return "", false
	}
	name := r.PathValue("name")
	if !fileName.MatchString(name) {
		http.Error(w, "a file name is letters, digits, '_', '.' and '-'", http.StatusBadRequest)
		return "", false
	}
	return filepath.Join(a.files, name), true
}
