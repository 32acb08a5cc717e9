package main

import (
	"context"
	"encoding/base64"
	"net"
	"testing"
	"time"

	dns2 "codeberg.org/miekg/dns"
	"codeberg.org/miekg/dns/rdata"
	dns1 "github.com/miekg/dns"
)

// TestV2AXFRWithTSIG checks what haven's zone transfer needs from v2: a TCP
// server whose handler verifies the request's TSIG (v2's server does not:
// the handler calls TSIGVerify) and streams the zone with TransferOut,
// signing every message, read by v1's Transfer as a secondary would.
func TestV2AXFRWithTSIG(t *testing.T) {
	const (
		zone    = "gslb.example.com."
		keyName = "axfr.key."
		addr    = "127.0.0.1:15363"
	)
	secret := []byte("0123456789abcdef0123456789abcdef")
	soa := &dns2.SOA{Hdr: dns2.Header{Name: zone, Class: dns2.ClassINET, TTL: 60},
		SOA: rdata.SOA{Ns: "ns1." + zone, Mbox: "hostmaster." + zone, Serial: 7, Refresh: 60, Retry: 30, Expire: 600, Minttl: 20}}

	mux := dns2.NewServeMux()
	refused := make(chan string, 4)
	mux.HandleFunc(zone, func(_ context.Context, w dns2.ResponseWriter, r *dns2.Msg) {
		if err := r.Unpack(); err != nil {
			refused <- err.Error()
			return
		}
		var tsig *dns2.TSIG
		for _, rr := range r.Pseudo {
			if x, ok := rr.(*dns2.TSIG); ok {
				tsig = x
			}
		}
		signer := dns2.HmacTSIG{Secret: secret}
		if tsig == nil || tsig.Hdr.Name != keyName {
			refused <- "no TSIG with the key"
			return
		}
		if err := dns2.TSIGVerify(r, signer, &dns2.TSIGOption{}); err != nil {
			refused <- "TSIG: " + err.Error()
			return
		}
		w.Hijack()
		c := dns2.NewClient()
		c.Transfer = &dns2.Transfer{TSIGSigner: signer}
		env := make(chan *dns2.Envelope)
		go func() {
			defer close(env)
			env <- &dns2.Envelope{Answer: []dns2.RR{soa}}
			env <- &dns2.Envelope{Answer: v2Answer}
			env <- &dns2.Envelope{Answer: []dns2.RR{soa}}
		}()
		if err := c.TransferOut(w, r, env); err != nil {
			refused <- "transfer out: " + err.Error()
		}
		w.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv := &dns2.Server{Addr: addr, Net: "tcp", Handler: mux}
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe() }()
	defer func() { srv.Shutdown(ctx); <-done }()
	for deadline := time.Now().Add(5 * time.Second); ; {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not listen: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	axfr := func(key []byte) (n int, err error) {
		m := new(dns1.Msg)
		m.SetAxfr(zone)
		m.SetTsig(keyName, dns1.HmacSHA256, 300, time.Now().Unix())
		tr := &dns1.Transfer{TsigSecret: map[string]string{keyName: base64.StdEncoding.EncodeToString(key)}, ReadTimeout: 2 * time.Second}
		env, err := tr.In(m, addr)
		if err != nil {
			return 0, err
		}
		for e := range env {
			if e.Error != nil {
				return n, e.Error
			}
			n += len(e.RR)
		}
		return n, nil
	}
	n, err := axfr(secret)
	if err != nil || n != 3 {
		t.Errorf("AXFR with the key: %d records, err %v; want 3", n, err)
	}
	if n, err := axfr([]byte("not the key, not the key, no....")); err == nil {
		t.Errorf("AXFR with a wrong key: %d records, no error", n)
	}
	select {
	case why := <-refused:
		t.Logf("wrong key refused: %s", why)
	case <-time.After(2 * time.Second):
		t.Errorf("wrong key not refused by the handler")
	}
}
