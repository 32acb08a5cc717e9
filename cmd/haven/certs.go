package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"

	"github.com/haven-ha/haven/internal/certs"
	"github.com/haven-ha/haven/internal/config"
)

const certsUsage = `usage: haven certs -c haven.yaml -o DIR [--force]

Makes a private CA (DIR/ca.pem, DIR/ca-key.pem) and, for every node in
haven.yaml, DIR/NODE.pem and DIR/NODE-key.pem for etcd's peer and client TLS.
An existing CA is reused, and existing node certificates that still fit are
kept. Point coordination.tls (and admin.tls, for HTTPS on the admin API) at them: {ca: DIR/ca.pem, cert: DIR/{node}.pem,
key: DIR/{node}-key.pem}.

flags:
`

// runCerts is `haven certs`: a private CA and the nodes' certificates for
// etcd's TLS.
func runCerts(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("certs", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, certsUsage); fs.PrintDefaults() }
	cfgPath := configFlag(fs)
	dir := fs.String("o", "certs", "directory to write the files to")
	force := fs.Bool("force", false, "replace the CA and every node certificate")
	if err := fs.Parse(args); err != nil {
		return parseError(err)
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil && !onlyMissingTLSFiles(err) {
		return err
	}
	var nodes []certs.Node
	for _, name := range cfg.NodeNames() {
		n, _ := cfg.Node(name)
		addrs := []string{n.Address}
		// The admin listener's address too, when admin.tls serves it on
		// another one (loopback test set-ups).
		if host, _, err := net.SplitHostPort(n.Admin); err == nil && host != "" && host != n.Address {
			if ip, err := netip.ParseAddr(host); err != nil || !ip.IsUnspecified() {
				addrs = append(addrs, host)
			}
		}
		nodes = append(nodes, certs.Node{Name: name, Addresses: addrs})
	}
	res, err := certs.Generate(*dir, cfg.Cluster, nodes, certs.Options{Force: *force})
	if err != nil {
		return err
	}
	if res.CACreated {
		fmt.Fprintf(stdout, "created CA %s\n", res.CA)
	} else {
		fmt.Fprintf(stdout, "reused CA %s\n", res.CA)
	}
	for _, f := range res.Issued {
		why := ""
		if r := res.Reasons[f]; r != "" {
			why = " (" + r + ")"
		}
		fmt.Fprintf(stdout, "issued %s%s\n", f, why)
	}
	for _, f := range res.Kept {
		fmt.Fprintf(stdout, "kept %s\n", f)
	}
	return nil
}

// onlyMissingTLSFiles reports whether every problem with the file is about
// coordination.tls files: those are what haven certs is about to write.
func onlyMissingTLSFiles(err error) bool {
	var ps config.Problems
	if !errors.As(err, &ps) {
		return false
	}
	for _, p := range ps {
		if !strings.HasPrefix(p.Path, "coordination.tls.") && !strings.HasPrefix(p.Path, "admin.tls.") {
			return false
		}
	}
	return true
}
