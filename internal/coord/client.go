package coord

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/status"
)

// Client defaults, chosen for fast failover on a LAN.
const (
	// DefaultDialTimeout bounds connecting and the check that the cluster
	// answers.
	DefaultDialTimeout = 2 * time.Second
	// keepAliveTime and keepAliveTimeout: a connection to a member that
	// stopped answering (power loss, partition: no RST arrives) is
	// abandoned after about 3s, and requests move to another member.
	keepAliveTime    = 2 * time.Second
	keepAliveTimeout = time.Second
	// reconnectMaxDelay caps gRPC's reconnection backoff (default 120s)
	// so that a restarted member is used again quickly.
	reconnectMaxDelay = 2 * time.Second
	// tlsProbeRead is how long a diagnostic TLS connection waits for the
	// server to reject the client certificate after the handshake (TLS
	// 1.3 sends that alert after the handshake completes).
	tlsProbeRead = 300 * time.Millisecond
)

// TLSFiles names the PEM files of a TLS identity: the CA that issued the
// cluster's certificates, and this node's certificate and key (see
// package certs).
type TLSFiles struct {
	CA   string
	Cert string
	Key  string
}

// config builds a client-side tls.Config: RootCAs from CA (the system's
// roots when CA is empty) and, when given, the certificate to present.
func (t *TLSFiles) config() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("TLS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS CA %s holds no PEM certificate", t.CA)
		}
		c.RootCAs = pool
	}
	if (t.Cert == "") != (t.Key == "") {
		return nil, fmt.Errorf("TLS certificate %q and key %q must be given together", t.Cert, t.Key)
	}
	if t.Cert != "" {
		pair, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("TLS certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// ClientConfig configures NewClient.
type ClientConfig struct {
	// Endpoints are the members' client addresses, "HOST:PORT" or URLs;
	// without a scheme, https is used when TLS is set, http otherwise.
	Endpoints []string
	// TLS is the client's identity. Members started by haven with TLS
	// require a certificate from the cluster's CA.
	TLS *TLSFiles
	// DialTimeout bounds connecting to a member and the initial check
	// (default DefaultDialTimeout).
	DialTimeout time.Duration
	// Logger receives the client's errors (default slog.Default()); they
	// carry component=etcd-client.
	Logger *slog.Logger
	// Lazy skips the initial check: the client connects in the background
	// and keeps trying, for a member that may be down when it is made.
	Lazy bool
}

// NewClient connects to etcd and checks that the cluster answers: at least
// one endpoint must report a leader within the dial timeout. Otherwise it
// returns an error that lists every endpoint tried and why it failed. ctx
// bounds only this check; close the client when done.
//
// The client pings its connections while it has streams open (watches,
// lease keep-alives) and gives a member 1s to answer, then moves its
// requests to another member; it reconnects to a member that comes back
// within a couple of seconds. gRPC spaces pings at least 10s apart
// whatever is asked, so a frozen member is found faster by the callers:
// owners renew through alternates, watches ask for progress. Embedded members accept such pings; an
// external etcd should run with --grpc-keepalive-min-time=1s, or it may
// answer an otherwise idle client's pings with GOAWAY.
func NewClient(ctx context.Context, cfg ClientConfig) (*clientv3.Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("coord: client: no endpoints")
	}
	dialTimeout := cfg.DialTimeout
	if dialTimeout == 0 {
		dialTimeout = DefaultDialTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	var tlsConfig *tls.Config
	if cfg.TLS != nil {
		c, err := cfg.TLS.config()
		if err != nil {
			return nil, fmt.Errorf("coord: client: %w", err)
		}
		tlsConfig = c
	}
	eps := make([]string, len(cfg.Endpoints))
	for i, raw := range cfg.Endpoints {
		u, err := parseURL(raw, cfg.TLS != nil, DefaultClientPort)
		if err != nil {
			return nil, fmt.Errorf("coord: client: endpoint %v", err)
		}
		eps[i] = u.String()
	}

	c, err := clientv3.New(clientv3.Config{
		Endpoints:            eps,
		DialTimeout:          dialTimeout,
		DialKeepAliveTime:    keepAliveTime,
		DialKeepAliveTimeout: keepAliveTimeout,
		TLS:                  tlsConfig,
		Logger:               newZapLogger(log.With("component", "etcd-client"), slog.LevelError),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   reconnectMaxDelay,
			},
			MinConnectTimeout: dialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("coord: client for %s: %w", strings.Join(eps, ", "), err)
	}
	if cfg.Lazy {
		return c, nil
	}
	if err := checkCluster(ctx, c, eps, tlsConfig, dialTimeout); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// checkCluster asks every endpoint for its status, concurrently, and
// returns nil as soon as one reports a leader.
func checkCluster(ctx context.Context, c *clientv3.Client, eps []string, tlsConfig *tls.Config, timeout time.Duration) error {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		ep  string
		err error
	}
	results := make(chan result, len(eps))
	for _, ep := range eps {
		go func() {
			resp, err := c.Status(cctx, ep)
			if err == nil && resp.Leader == 0 {
				err = errors.New("the member answers but has no leader: fewer than a quorum of members are up and connected")
			}
			results <- result{ep, err}
		}()
	}
	failed := map[string]error{}
	for range eps {
		r := <-results
		if r.err == nil {
			return nil
		}
		failed[r.ep] = r.err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("coord: client: %w", err)
	}

	// Say why, endpoint by endpoint, in the order given. A plain
	// connection tells refused ports and TLS problems apart more clearly
	// than gRPC's messages do.
	parts := make([]string, len(eps))
	for i, ep := range eps {
		why := probeEndpoint(ctx, ep, tlsConfig)
		if why == nil {
			why = errors.New(grpcMessage(failed[ep]))
		}
		parts[i] = ep + ": " + why.Error()
	}
	return fmt.Errorf("coord: no etcd endpoint answered within %v: %s. Check that the coordination members run, and that the endpoints, ports and TLS files match the cluster's",
		timeout, strings.Join(parts, "; "))
}

// probeEndpoint connects to ep directly and returns what prevents a client
// from talking to it, or nil when nothing obvious does.
func probeEndpoint(ctx context.Context, ep string, tlsConfig *tls.Config) error {
	u, err := url.Parse(ep)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return fmt.Errorf("cannot connect: %w", err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}

	if u.Scheme != "https" {
		// Does the endpoint want TLS? The check needs no trust: it only
		// looks whether a TLS handshake succeeds.
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
		// A TLS 1.2 server that requires a client certificate answers
		// with an alert instead: TLS all the same.
		if err := tc.HandshakeContext(ctx); err == nil || strings.Contains(err.Error(), "remote error: tls") {
			return errors.New("the endpoint serves TLS, but the client has no TLS settings: give it the cluster's CA, a certificate and a key (haven certs)")
		}
		return nil
	}

	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if tlsConfig != nil {
		c = tlsConfig.Clone()
	}
	if c.ServerName == "" {
		c.ServerName = u.Hostname()
	}
	tc := tls.Client(conn, c)
	if err := tc.HandshakeContext(ctx); err != nil {
		return explainTLS(err)
	}
	tc.SetReadDeadline(time.Now().Add(tlsProbeRead))
	if _, err := tc.Read(make([]byte, 1)); err != nil && strings.Contains(err.Error(), "remote error") {
		return explainTLS(err)
	}
	return nil
}

// explainTLS adds what to check to TLS errors; other errors pass unchanged.
func explainTLS(err error) error {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	msg := err.Error()
	switch {
	case errors.As(err, &unknown) || strings.Contains(msg, "certificate signed by unknown authority"):
		return fmt.Errorf("TLS: the server's certificate is not signed by the CA this node trusts: give the cluster's ca.pem as the CA (%w)", err)
	case errors.As(err, &host):
		return fmt.Errorf("TLS: the server's certificate does not name this address: issue it again with haven certs (%w)", err)
	case errors.As(err, &invalid):
		return fmt.Errorf("TLS: the server's certificate is not valid now: check its dates and the clocks (%w)", err)
	case strings.Contains(msg, "remote error: tls: certificate required"):
		return fmt.Errorf("TLS: the server requires a client certificate: give this node's certificate and key (%w)", err)
	case strings.Contains(msg, "remote error: tls:"):
		return fmt.Errorf("TLS: the server refused this node's certificate: it must come from the cluster's CA (%w)", err)
	}
	return err
}

// grpcMessage shortens a gRPC error to its message.
func grpcMessage(err error) string {
	if err == nil {
		return "no answer"
	}
	if s, ok := status.FromError(err); ok {
		return s.Message()
	}
	return err.Error()
}
