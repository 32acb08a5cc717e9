package main

import (
	"context"
	"fmt"
	"io"

	dns2 "codeberg.org/miekg/dns"
	dns1 "github.com/miekg/dns"
)

// serve runs the UDP server of lib ("v1" or "v2") on addr until ctx ends.
// Each is the library's own server in its default form, answering every
// query as the benchmarks do.
func serve(ctx context.Context, lib, addr string, started func()) error {
	switch lib {
	case "v1":
		return serveV1(ctx, addr, started)
	case "v2":
		return serveV2(ctx, addr, started)
	}
	return fmt.Errorf("serve: %q is not one of v1, v2", lib)
}

// serveV1 is v1's server as its README shows it: a Handler that builds a
// new Msg and writes it with WriteMsg (which packs into a new buffer). The
// server reads one datagram at a time, with its control message, and
// answers each in a new goroutine.
func serveV1(ctx context.Context, addr string, started func()) error {
	srv := &dns1.Server{Addr: addr, Net: "udp", NotifyStartedFunc: started,
		Handler: dns1.HandlerFunc(func(w dns1.ResponseWriter, r *dns1.Msg) {
			if len(r.Question) != 1 {
				return
			}
			w.WriteMsg(answerV1(new(dns1.Msg), r))
		})}
	stop := context.AfterFunc(ctx, func() { srv.Shutdown() })
	defer stop()
	if err := srv.ListenAndServe(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("v1: serve %s: %w", addr, err)
	}
	return nil
}

// serveV2 is v2's server as its README and cmd/reflect show it: the server
// reads batches with recvmmsg into pooled buffers, unpacks the header and
// question, and calls the Handler in a new goroutine per datagram; the
// Handler unpacks the rest, answers in a shallow Copy of the query (whose
// Data is the pooled buffer, so Pack reuses it) and io.Copy writes it and
// returns the buffer to the pool.
func serveV2(ctx context.Context, addr string, started func()) error {
	srv := &dns2.Server{Addr: addr, Net: "udp",
		NotifyStartedFunc: func(context.Context) { started() },
		Handler: dns2.HandlerFunc(func(_ context.Context, w dns2.ResponseWriter, r *dns2.Msg) {
			if err := r.Unpack(); err != nil || len(r.Question) != 1 {
				return
			}
			m := r.Copy()
			m.Question, m.Extra, m.Pseudo = nil, nil, nil
			answerV2(m, r)
			if err := m.Pack(); err != nil {
				return
			}
			io.Copy(w, m)
		})}
	stop := context.AfterFunc(ctx, func() { srv.Shutdown(context.Background()) })
	defer stop()
	if err := srv.ListenAndServe(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("v2: serve %s: %w", addr, err)
	}
	return nil
}
