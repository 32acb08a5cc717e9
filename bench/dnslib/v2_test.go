package main

import (
	"bytes"
	"testing"

	dns2 "codeberg.org/miekg/dns"
	dns1 "github.com/miekg/dns"
)

// The tests here pin down what v2 (codeberg.org/miekg/dns v0.6.0) does
// where it differs from what haven needs, as docs/BENCHMARKS.md reports it.
// When one fails after an upgrade, v2 changed: update the report.

// TestV2ECSDefects: v2 v0.6.0 cannot read the ECS option a resolver sends
// for a /24 (RFC 7871 cuts the address to its prefix: 3 octets), and writes
// an ECS option with the wrong address.
func TestV2ECSDefects(t *testing.T) {
	q := queries()
	var r dns2.Msg
	if err := unpackV2(&r, q[1].wire); err != nil {
		t.Fatalf("unpack: %v", err)
	}
	s := r.Pseudo[0].(*dns2.SUBNET)
	if s.Address.IsValid() {
		t.Errorf("v2 now reads a 3-octet ECS address: %v", s.Address)
	}
	t.Logf("3-octet ECS 198.18.0.0/24 unpacks without an error as %v", s)

	// Packing: the family's bit length goes into the first address octet
	// and the other three are whatever the buffer held.
	m := &dns2.Msg{MsgHeader: dns2.MsgHeader{ID: 1, Response: true, UDPSize: udpSize}}
	m.Question = []dns2.RR{&dns2.A{Hdr: dns2.Header{Name: qname, Class: dns2.ClassINET}}}
	m.Pseudo = []dns2.RR{&dns2.SUBNET{Family: 1, SourceNetmask: 24, SourceScope: 24, Address: ecsAddr}}
	buf := bytes.Repeat([]byte{0xee}, 512)
	out, err := packV2(m, buf[:0])
	if err != nil {
		t.Fatal(err)
	}
	var v1 dns1.Msg
	if err := v1.Unpack(out); err != nil {
		t.Fatal(err)
	}
	got := v1.IsEdns0().Option[0].(*dns1.EDNS0_SUBNET).Address.String()
	if got != "32.238.238.238" {
		t.Errorf("v2 now packs ECS 198.18.0.0/24 as %s", got)
	}
	t.Logf("ECS 198.18.0.0/24 packed into a buffer of 0xee octets reads back (v1) as %s/24", got)
}

// TestV2UnknownOption: v2 v0.6.0 refuses a message with an EDNS option it
// does not know, where RFC 6891 says to ignore it; v1 keeps it as
// EDNS0_LOCAL.
func TestV2UnknownOption(t *testing.T) {
	q := new(dns1.Msg)
	q.SetQuestion(qname, dns1.TypeA)
	q.SetEdns0(udpSize, false)
	opt := q.IsEdns0()
	opt.Option = append(opt.Option, &dns1.EDNS0_LOCAL{Code: 65001, Data: []byte{1, 2}})
	wire, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	var r1 dns1.Msg
	if err := r1.Unpack(wire); err != nil {
		t.Errorf("v1: %v", err)
	}
	var r2 dns2.Msg
	err = unpackV2(&r2, wire)
	if err == nil {
		t.Errorf("v2 now unpacks a query with EDNS option 65001")
	}
	t.Logf("v2 unpacking a query with EDNS option 65001: %v", err)
}

// TestV2ReusedMsgKeepsEDNS: v2's Unpack into a Msg that last held a query
// with EDNS leaves UDPSize set when the new query has none (unpackV2 clears
// the header first for that reason).
func TestV2ReusedMsgKeepsEDNS(t *testing.T) {
	q := queries()
	var r dns2.Msg
	r.Data = q[1].wire
	if err := r.Unpack(); err != nil {
		t.Fatal(err)
	}
	r.Data = q[0].wire
	if err := r.Unpack(); err != nil {
		t.Fatal(err)
	}
	if r.UDPSize == 0 {
		t.Errorf("v2's Unpack now clears UDPSize")
	}
	t.Logf("plain query unpacked into a reused Msg: UDPSize %d", r.UDPSize)
}
