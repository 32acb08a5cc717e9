package lb

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certReloader serves a certificate from files and reloads it when either
// file changes, checked at most once a second on handshakes. A broken new
// pair is logged and the previous one kept.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu       sync.Mutex
	cert     *tls.Certificate
	modTimes [2]time.Time
	checked  time.Time
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) load() error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tls: load %s and %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert = &cert
	r.modTimes = r.stat()
	return nil
}

func (r *certReloader) stat() (t [2]time.Time) {
	for i, f := range []string{r.certFile, r.keyFile} {
		if fi, err := os.Stat(f); err == nil {
			t[i] = fi.ModTime()
		}
	}
	return t
}

func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= time.Second {
		r.checked = now
		if r.stat() != r.modTimes {
			prev := r.cert
			if err := r.load(); err != nil {
				r.cert = prev
				r.modTimes = r.stat() // do not retry on every handshake
				r.log.Error("tls: keeping the previous certificate", "err", err)
			} else {
				r.log.Info("tls: certificate reloaded", "cert", r.certFile)
			}
		}
	}
	return r.cert, nil
}

func (r *certReloader) config() *tls.Config {
	return &tls.Config{
		GetCertificate: r.getCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
		MinVersion:     tls.VersionTLS12,
	}
}
