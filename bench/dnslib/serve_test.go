package main

import (
	"context"
	"errors"
	"testing"
	"time"

	dns1 "github.com/miekg/dns"
)

// TestServe starts each library's server on loopback, asks it every query
// of queries() and checks the answer, but for v2's echoed ECS address (see
// TestV2ECSDefects).
func TestServe(t *testing.T) {
	for lib, addr := range map[string]string{"v1": "127.0.0.1:15361", "v2": "127.0.0.1:15362"} {
		t.Run(lib, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			started := make(chan struct{})
			done := make(chan error, 1)
			go func() { done <- serve(ctx, lib, addr, func() { close(started) }) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
			}()
			select {
			case <-started:
			case err := <-done:
				t.Fatalf("server stopped before it started: %v", err)
			case <-ctx.Done():
				t.Fatal("server did not start")
			}
			for _, q := range queries() {
				var m dns1.Msg
				if err := m.Unpack(q.wire); err != nil {
					t.Fatal(err)
				}
				cl := &dns1.Client{Timeout: time.Second}
				var r *dns1.Msg
				var err error
				for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
					if r, _, err = cl.ExchangeContext(ctx, &m, addr); err == nil || !errors.Is(err, context.DeadlineExceeded) {
						break
					}
				}
				if err != nil {
					t.Fatalf("%s: %v", q.name, err)
				}
				if !r.Authoritative || len(r.Answer) != 1 || r.Answer[0].String() != v1Answer[0].String() {
					t.Errorf("%s: answer %v", q.name, r)
				}
				if opt := r.IsEdns0(); (opt != nil) != (q.name != "plain") {
					t.Errorf("%s: OPT %v", q.name, opt)
				} else if opt != nil && (len(opt.Option) != 1 || lib == "v1" && opt.Option[0].String() != "198.18.0.0/24/24") {
					t.Errorf("%s: options %v", q.name, opt.Option)
				}
			}
		})
	}
}
