package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testenv"
)

// TestAdminTLSAndTokens: with admin.tls the agent serves its admin API
// over HTTPS with the certificate `haven certs` made, and the commands
// speak HTTPS to it and verify it; plain HTTP is not served. (Which token
// a call off loopback needs is internal/web's TestAuthenticatedReads.)
func TestAdminTLSAndTokens(t *testing.T) {
	backend := startBackend(t, "app1")
	admin, listen := freeAddr(t), freeAddr(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "haven.yaml")
	doc := e2eConfig(admin, listen, []e2eBackend{{name: "app1", addr: backend}}, "") +
		"admin: {tls: {ca: certs/ca.pem, cert: \"certs/{node}.pem\", key: \"certs/{node}-key.pem\"}, token_file: admin.token, read_token_file: read.token, authenticate_reads: true}\n"
	for name, content := range map[string]string{"haven.yaml": doc, "admin.token": "writer\n", "read.token": "reader\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if r := haven(t, 30*time.Second, "certs", "-c", cfg, "-o", filepath.Join(dir, "certs")); r.code != 0 {
		t.Fatalf("haven certs:\n%s", r)
	}
	start(t, "agent", "-c", cfg, "-n", "lb1")
	testenv.Poll(t, 30*time.Second, "haven lb status over HTTPS", func() (bool, string) {
		r := haven(t, 20*time.Second, "lb", "status", "-c", cfg)
		return r.code == 0 && strings.Contains(r.stdout, "app1") && strings.Contains(r.stdout, " up "), r.String()
	})
	// Plain HTTP is not served.
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + admin + "/api/v1/status"); err == nil && resp.StatusCode == 200 {
		resp.Body.Close()
		t.Error("the admin API answered plain HTTP with admin.tls set")
	}

	// A changing call works over HTTPS too (on loopback: no token needed).
	if r := haven(t, 20*time.Second, "lb", "drain", "app1", "-c", cfg); r.code != 0 || !strings.Contains(r.stdout, "web/app1 is drain") {
		t.Errorf("haven lb drain over HTTPS:\n%s", r)
	}
}
