package health

import (
	"context"
	"fmt"
	"net"
)

// tcpProber passes when a TCP connection is established, then closes it.
type tcpProber struct {
	port   int // replaces the target's port when set
	dialer net.Dialer
}

func (p *tcpProber) Probe(ctx context.Context, target string) error {
	addr, err := dialAddr(target, p.port, "")
	if err != nil {
		return fmt.Errorf("tcp: %w", err)
	}
	conn, err := p.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("tcp: dial %s: %w", addr, ctxCause(ctx, netCause(err)))
	}
	conn.Close() // the connect was the check; a close error says nothing about the target
	return nil
}
