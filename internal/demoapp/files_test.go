package demoapp

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFiles: an upload is stored whole under its name and served back; a
// name that would leave the directory is refused; an app without a
// directory says how to give it one.
func TestFiles(t *testing.T) {
	dir := t.TempDir()
	a := New("app1")
	if err := a.UseFiles(dir); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := do("PUT", "/files/photo.jpg", "bytes of a photo"); code != 201 || !strings.Contains(body, `"stored_by":"app1"`) {
		t.Fatalf("upload: %d %s", code, body)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "photo.jpg")); err != nil || string(b) != "bytes of a photo" {
		t.Fatalf("stored: %q %v", b, err)
	}
	if code, body := do("GET", "/files/photo.jpg", ""); code != 200 || body != "bytes of a photo" {
		t.Errorf("download: %d %q", code, body)
	}
	if code, _ := do("GET", "/files/missing.jpg", ""); code != 404 {
		t.Errorf("a missing file: %d, want 404", code)
	}
	for _, name := range []string{"..", ".hidden", "a%2Fb"} {
		// The mux redirects a path with ".." to its clean form: nothing
		// is stored.
		if code, _ := do("PUT", "/files/"+name, "x"); code != 400 && code != 301 && code != 307 {
			t.Errorf("PUT /files/%s: %d, want it refused", name, code)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the directory holds %d entries, want only the upload", len(entries))
	}
	b := New("app2")
	srv2 := httptest.NewServer(b.Handler())
	defer srv2.Close()
	resp, err := http.Get(srv2.URL + "/files/photo.jpg")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.Contains(string(body), "--files DIR") {
		t.Errorf("an app without files: %d %s", resp.StatusCode, body)
	}
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
