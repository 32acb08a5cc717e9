// Package adminclient is what talks to the agents' admin APIs needs: a
// node's base URL, the admin token and an HTTP client that verifies the
// agents' certificates. The CLI uses it, and so does an agent that asks
// its peers (the dashboard).
package adminclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/config"
)

// Token reads the admin token haven.yaml names: the write token, or the
// read token when there is no write token file; "" when neither exists.
func Token(cfg *config.Config) (string, error) {
	for _, f := range []string{cfg.Admin.TokenFile, cfg.Admin.ReadTokenFile} {
		if f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("read admin token: %w", err)
		}
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
	}
	return "", nil
}

// HTTPClient returns a client with the timeout; with admin.tls it speaks
// HTTPS and verifies the agents' certificates with the CA.
func HTTPClient(cfg *config.Config, timeout time.Duration) (*http.Client, error) {
	c := &http.Client{Timeout: timeout}
	t := cfg.Admin.TLS
	if t == nil {
		return c, nil
	}
	tc, err := TLSConfig(t.CA)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	c.Transport = tr
	return c, nil
}

// TLSConfig is the client side of admin.tls: the agents' certificates
// verified with the CA in caFile.
func TLSConfig(caFile string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("admin.tls.ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("admin.tls.ca: %s holds no PEM certificate", caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// URL is the base URL of a node's admin API: its admin address, with the
// node's address when the admin listens on every address.
func URL(cfg *config.Config, node string) (string, error) {
	n, ok := cfg.Node(node)
	if !ok {
		return "", fmt.Errorf("node %q is not in the configuration (nodes: %v)", node, cfg.NodeNames())
	}
	host, port, err := net.SplitHostPort(n.Admin)
	if err != nil {
		return "", fmt.Errorf("node %s: admin address %q: %w", node, n.Admin, err)
	}
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		host = n.Address
	}
	scheme := "http://"
	if cfg.Admin.TLS != nil {
		scheme = "https://"
	}
	return scheme + net.JoinHostPort(host, port), nil
}
