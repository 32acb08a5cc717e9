// Package certs issues the certificates that haven's etcd members and agents
// use to talk to each other (`haven certs`): one certificate authority per
// haven cluster, and per node one certificate that serves both as a TLS
// server certificate (etcd client and peer ports) and as a client
// certificate (etcd peers and agents authenticate each other mutually).
//
// Keys are ECDSA P-256. Key files are written with mode 0600, certificates
// with 0644, each through a temporary file and a rename so that a reader
// never sees half a file. An existing CA key is never replaced unless
// Options.Force is set; without it the existing CA issues the node
// certificates that are missing or no longer fit.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// CAFile and CAKeyFile are the CA's files inside the certificate directory;
// a node's are NODE.pem and NODE-key.pem.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem"
)

// Defaults for Options.
const (
	// DefaultValidity is how long a node certificate is valid.
	DefaultValidity = 3 * 365 * 24 * time.Hour
	// CAValidity is how long a new CA is valid. Node certificates never
	// outlive their CA.
	CAValidity = 10 * 365 * 24 * time.Hour
	// renewBefore: a node certificate that expires sooner than this is
	// issued again.
	renewBefore = 30 * 24 * time.Hour
)

// Node is a machine that gets a certificate.
type Node struct {
	// Name is the node's name in haven.yaml; it becomes the certificate's
	// common name, a DNS SAN and the file name.
	Name string
	// Addresses are the node's IP addresses or DNS names (a "host:port"
	// form is accepted; the port is ignored).
	Addresses []string
}

// Options tune Generate.
type Options struct {
	// Validity of node certificates (default DefaultValidity).
	Validity time.Duration
	// Force replaces an existing CA, and then every listed node's
	// certificate. Certificates issued by the old CA stop working.
	Force bool
	// Now is the issuing time (default time.Now); tests set it.
	Now func() time.Time
}

// Result says what Generate did, as paths inside the directory.
type Result struct {
	// CA is the path of ca.pem; CACreated tells whether Generate made it.
	CA        string
	CACreated bool
	// Issued lists the certificates written by this run, Kept those that
	// were already there and still fit. Reasons maps an issued certificate
	// that replaced an existing one to why it was replaced.
	Issued  []string
	Kept    []string
	Reasons map[string]string
}

var nodeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Generate writes ca.pem and ca-key.pem (unless they exist) and, for each
// node, NODE.pem and NODE-key.pem into dir, creating dir with mode 0700 if
// needed. Each node certificate names the node, its addresses, 127.0.0.1,
// ::1 and localhost, and may be used for server and client authentication.
// An existing node certificate is kept when the CA verifies it, it names
// every wanted SAN and it is not about to expire.
func Generate(dir, cluster string, nodes []Node, opt Options) (*Result, error) {
	if cluster == "" {
		return nil, errors.New("certs: cluster name is empty")
	}
	if opt.Validity == 0 {
		opt.Validity = DefaultValidity
	}
	if opt.Validity < 0 {
		return nil, fmt.Errorf("certs: validity %v is negative", opt.Validity)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	seen := map[string]bool{}
	for _, n := range nodes {
		// NAME.pem and NAME-key.pem must not collide with the CA's files or
		// with another node's.
		if !nodeName.MatchString(n.Name) || n.Name == "ca" || strings.HasSuffix(n.Name, "-key") {
			return nil, fmt.Errorf("certs: node name %q is not usable as a file name (letters, digits, '.', '_', '-'; not \"ca\", not ending in \"-key\")", n.Name)
		}
		if seen[n.Name] {
			return nil, fmt.Errorf("certs: node %q is listed twice", n.Name)
		}
		seen[n.Name] = true
		for _, a := range n.Addresses {
			if hostOf(a) == "" {
				return nil, fmt.Errorf("certs: node %s: address %q is empty", n.Name, a)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}

	res := &Result{CA: filepath.Join(dir, CAFile), Reasons: map[string]string{}}
	ca, err := loadOrCreateCA(dir, cluster, opt, res)
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		if err := ensureNode(dir, ca, n, opt, res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
	pool *x509.CertPool
}

func loadOrCreateCA(dir, cluster string, opt Options, res *Result) (*authority, error) {
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	certOK, keyOK := exists(certPath), exists(keyPath)
	if !opt.Force {
		switch {
		case certOK && keyOK:
			return loadCA(certPath, keyPath)
		case keyOK:
			return nil, fmt.Errorf("certs: %s exists without %s: restore %s, or pass force to replace the CA (node certificates are then issued again)", keyPath, CAFile, CAFile)
		case certOK:
			return nil, fmt.Errorf("certs: %s exists without %s: a CA cannot issue certificates without its key; restore %s, or pass force to replace the CA (node certificates are then issued again)", certPath, CAKeyFile, CAKeyFile)
		}
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: CA key: %w", err)
	}
	now := opt.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "haven " + cluster + " CA", Organization: []string{"haven"}, OrganizationalUnit: []string{cluster}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("certs: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: CA key: %w", err)
	}
	// The key first: a crash between the two writes leaves a key without a
	// certificate, which the next run reports instead of silently
	// replacing.
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	res.CACreated = true
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &authority{cert: cert, key: key, pool: pool}, nil
}

func loadCA(certPath, keyPath string) (*authority, error) {
	cert, err := readCert(certPath)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("certs: %s is not a CA certificate", certPath)
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("certs: %s does not belong to %s: restore the matching pair, or pass force to replace the CA", keyPath, certPath)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &authority{cert: cert, key: key, pool: pool}, nil
}

// sans returns the DNS names and IP addresses a node's certificate must
// name.
func sans(n Node) (dns []string, ips []net.IP) {
	addDNS := func(s string) {
		s = strings.ToLower(s)
		if !slices.Contains(dns, s) {
			dns = append(dns, s)
		}
	}
	addIP := func(ip net.IP) {
		for _, have := range ips {
			if have.Equal(ip) {
				return
			}
		}
		ips = append(ips, ip)
	}
	addDNS(n.Name)
	addDNS("localhost")
	for _, a := range n.Addresses {
		h := hostOf(a)
		if ip := net.ParseIP(h); ip != nil {
			addIP(ip)
		} else {
			addDNS(h)
		}
	}
	addIP(net.IPv4(127, 0, 0, 1))
	addIP(net.IPv6loopback)
	return dns, ips
}

// hostOf strips a port and IPv6 brackets from an address.
func hostOf(a string) string {
	a = strings.TrimSpace(a)
	if h, _, err := net.SplitHostPort(a); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")
}

func ensureNode(dir string, ca *authority, n Node, opt Options, res *Result) error {
	certPath := filepath.Join(dir, n.Name+".pem")
	keyPath := filepath.Join(dir, n.Name+"-key.pem")
	dns, ips := sans(n)

	if !opt.Force && !res.CACreated && exists(certPath) && exists(keyPath) {
		why := fits(certPath, keyPath, ca, dns, ips, opt.Now())
		if why == "" {
			res.Kept = append(res.Kept, certPath)
			return nil
		}
		res.Reasons[certPath] = why
	} else if exists(certPath) {
		switch {
		case opt.Force:
			res.Reasons[certPath] = "force"
		case res.CACreated:
			res.Reasons[certPath] = "new CA"
		default:
			res.Reasons[certPath] = "key file missing"
		}
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("certs: node %s: %w", n.Name, err)
	}
	now := opt.Now()
	notAfter := now.Add(opt.Validity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: n.Name, Organization: []string{"haven"}, OrganizationalUnit: slices.Clone(ca.cert.Subject.OrganizationalUnit)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
		SubjectKeyId: keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return fmt.Errorf("certs: node %s: %w", n.Name, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return fmt.Errorf("certs: node %s: %w", n.Name, err)
	}
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	res.Issued = append(res.Issued, certPath)
	return nil
}

// fits returns "" when the node certificate at certPath is usable as it is,
// or why it is not.
func fits(certPath, keyPath string, ca *authority, dns []string, ips []net.IP, now time.Time) string {
	cert, err := readCert(certPath)
	if err != nil {
		return err.Error()
	}
	key, err := readKey(keyPath)
	if err != nil {
		return err.Error()
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return "key does not match certificate"
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:       ca.pool,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return "not valid under " + CAFile + ": " + err.Error()
	}
	if cert.NotAfter.Sub(now) < renewBefore {
		return "expires " + cert.NotAfter.UTC().Format(time.DateOnly)
	}
	for _, d := range dns {
		if !slices.Contains(cert.DNSNames, d) {
			return "does not name " + d
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return "does not name " + ip.String()
		}
	}
	return ""
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil || !errors.Is(err, fs.ErrNotExist)
}

func readCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("certs: %s: no PEM certificate", path)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certs: %s: %w", path, err)
	}
	return cert, nil
}

func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("certs: %s: no PEM key", path)
	}
	var key any
	switch b.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("certs: %s: PEM block %q is not a private key", path, b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("certs: %s: %w", path, err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("certs: %s: unsupported key type %T", path, key)
	}
	return s, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n.Add(n, big.NewInt(1))
}

func keyID(pub *ecdsa.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	sum := sha1.Sum(der) // RFC 5280 4.2.1.2 method (1), not for security
	return sum[:]
}

// writeFile replaces path atomically with data and the given mode.
func writeFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("certs: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("certs: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("certs: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}
