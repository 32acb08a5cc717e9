package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var testNodes = []Node{
	{Name: "db1", Addresses: []string{"198.18.1.21", "db1.example"}},
	{Name: "db2", Addresses: []string{"198.18.1.22:2380", "[2001:db8::22]"}},
}

func caPool(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	ca, err := readCert(filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool
}

// TestGenerateVerifies checks that every node certificate verifies against
// the CA for each of its SANs, for server and for client authentication,
// loads as a TLS key pair, and that key files are private.
func TestGenerateVerifies(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	res, err := Generate(dir, "shop", testNodes, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.CACreated || len(res.Issued) != 2 || len(res.Kept) != 0 {
		t.Fatalf("result %+v, want a new CA and 2 issued certificates", res)
	}
	pool := caPool(t, dir)

	wantNames := map[string][]string{
		"db1": {"db1", "localhost", "127.0.0.1", "::1", "198.18.1.21", "db1.example"},
		"db2": {"db2", "localhost", "127.0.0.1", "::1", "198.18.1.22", "2001:db8::22"},
	}
	for node, names := range wantNames {
		cert, err := readCert(filepath.Join(dir, node+".pem"))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
					t.Errorf("%s: verify for %s (usage %v): %v", node, name, usage, err)
				}
			}
		}
		if err := cert.VerifyHostname("198.18.9.9"); err == nil {
			t.Errorf("%s: certificate also names 198.18.9.9", node)
		}
		if _, err := tls.LoadX509KeyPair(filepath.Join(dir, node+".pem"), filepath.Join(dir, node+"-key.pem")); err != nil {
			t.Errorf("%s: key pair: %v", node, err)
		}
	}

	for _, name := range []string{CAKeyFile, "db1-key.pem", "db2-key.pem"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, st.Mode().Perm())
		}
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("directory has mode %v, want 0700", st.Mode().Perm())
	}
}

// TestGenerateReusesCA checks that a second run keeps the CA key and the
// fitting node certificates, issues only what is missing or no longer fits
// with the same CA, and that Force replaces the CA.
func TestGenerateReusesCA(t *testing.T) {
	dir := t.TempDir()
	if _, err := Generate(dir, "shop", testNodes[:1], Options{}); err != nil {
		t.Fatal(err)
	}
	caKey := readFile(t, dir, CAKeyFile)
	db1 := readFile(t, dir, "db1.pem")

	// db2 is new; db1 is unchanged.
	res, err := Generate(dir, "shop", testNodes, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.CACreated {
		t.Error("second run created a new CA")
	}
	if !bytes.Equal(readFile(t, dir, CAKeyFile), caKey) {
		t.Error("second run changed ca-key.pem")
	}
	if !bytes.Equal(readFile(t, dir, "db1.pem"), db1) {
		t.Error("second run changed db1.pem, which still fits")
	}
	if len(res.Issued) != 1 || !strings.HasSuffix(res.Issued[0], "db2.pem") || len(res.Kept) != 1 {
		t.Errorf("result %+v, want db2 issued and db1 kept", res)
	}
	pool := caPool(t, dir)
	db2, err := readCert(filepath.Join(dir, "db2.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db2.Verify(x509.VerifyOptions{Roots: pool, DNSName: "db2"}); err != nil {
		t.Errorf("db2 issued by the existing CA does not verify: %v", err)
	}

	// A new address for db1: its certificate is issued again.
	moved := []Node{{Name: "db1", Addresses: []string{"198.18.1.99"}}}
	res, err = Generate(dir, "shop", moved, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Issued) != 1 || !strings.Contains(res.Reasons[res.Issued[0]], "198.18.1.99") {
		t.Errorf("result %+v, want db1 issued again because it lacks 198.18.1.99", res)
	}
	cert, err := readCert(filepath.Join(dir, "db1.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "198.18.1.99"}); err != nil {
		t.Errorf("db1 reissued: %v", err)
	}

	// Force: a new CA, and every listed node issued by it.
	res, err = Generate(dir, "shop", testNodes, Options{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.CACreated || bytes.Equal(readFile(t, dir, CAKeyFile), caKey) || len(res.Issued) != 2 {
		t.Errorf("force: result %+v, want a new CA key and 2 issued certificates", res)
	}
	newPool := caPool(t, dir)
	for _, n := range testNodes {
		cert, err := readCert(filepath.Join(dir, n.Name+".pem"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: newPool, DNSName: n.Name}); err != nil {
			t.Errorf("force: %s does not verify under the new CA: %v", n.Name, err)
		}
	}
}

// TestGenerateRefuses checks the cases where Generate must not write.
func TestGenerateRefuses(t *testing.T) {
	t.Run("ca.pem without key", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := Generate(dir, "shop", nil, Options{}); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
			t.Fatal(err)
		}
		_, err := Generate(dir, "shop", testNodes, Options{})
		if err == nil || !strings.Contains(err.Error(), "exists without ca-key.pem") {
			t.Fatalf("err = %v, want one saying the CA key is missing", err)
		}
		if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
			t.Error("a CA key was written without force")
		}
	})
	t.Run("key without ca.pem", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := Generate(dir, "shop", nil, Options{}); err != nil {
			t.Fatal(err)
		}
		key := readFile(t, dir, CAKeyFile)
		if err := os.Remove(filepath.Join(dir, CAFile)); err != nil {
			t.Fatal(err)
		}
		if _, err := Generate(dir, "shop", testNodes, Options{}); err == nil {
			t.Fatal("Generate replaced a CA whose certificate is missing without force")
		}
		if !bytes.Equal(readFile(t, dir, CAKeyFile), key) {
			t.Error("ca-key.pem changed")
		}
	})
	for _, bad := range []Node{{Name: "../x"}, {Name: "ca"}, {Name: "ca-key"}, {Name: "db1-key"}, {Name: ""}, {Name: "a", Addresses: []string{" "}}} {
		if _, err := Generate(t.TempDir(), "shop", []Node{bad}, Options{}); err == nil {
			t.Errorf("node %+v: no error", bad)
		}
	}
	if _, err := Generate(t.TempDir(), "shop", []Node{{Name: "a"}, {Name: "a"}}, Options{}); err == nil {
		t.Error("duplicate node: no error")
	}
}

// TestGenerateValidity checks that node certificates never outlive the CA
// and that a certificate close to expiry is issued again.
func TestGenerateValidity(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := Generate(dir, "shop", testNodes[:1], Options{Validity: 100 * 365 * 24 * time.Hour, Now: func() time.Time { return start }}); err != nil {
		t.Fatal(err)
	}
	ca, _ := readCert(filepath.Join(dir, CAFile))
	db1, _ := readCert(filepath.Join(dir, "db1.pem"))
	if db1.NotAfter.After(ca.NotAfter) {
		t.Errorf("db1 valid until %v, after its CA (%v)", db1.NotAfter, ca.NotAfter)
	}

	dir = t.TempDir()
	if _, err := Generate(dir, "shop", testNodes[:1], Options{Validity: 40 * 24 * time.Hour, Now: func() time.Time { return start }}); err != nil {
		t.Fatal(err)
	}
	later := start.Add(20 * 24 * time.Hour)
	res, err := Generate(dir, "shop", testNodes[:1], Options{Validity: 40 * 24 * time.Hour, Now: func() time.Time { return later }})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Issued) != 1 || !strings.HasPrefix(res.Reasons[res.Issued[0]], "expires") {
		t.Errorf("result %+v, want db1 issued again because it expires soon", res)
	}
}

func readFile(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
