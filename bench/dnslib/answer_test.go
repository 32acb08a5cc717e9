package main

import (
	"testing"

	dns2 "codeberg.org/miekg/dns"
	dns1 "github.com/miekg/dns"
)

// The benchmarks run the authoritative answer path of haven's traffic
// manager (unpack a query into a reused Msg, build the answer, pack it into
// a reused buffer) with each library, on each query of queries():
//
//	go test -bench . -benchmem
//
// v1 is haven's path as it is: no name compression (Truncate turns it off
// for an answer that fits). v1compress packs with compression on, which is
// what v2 always does: v2's Pack fills a compression map for every message
// with an answer and cannot be told not to. Here that buys v2 nothing: it
// does not enter the question's name in the map, so its answer is as long
// as v1's uncompressed one (74 octets), where v1compress's is 54.

// libs are the three ways the benchmarks answer.
var libs = []struct {
	name   string
	answer func(b *testing.B, wire []byte) func() ([]byte, error)
}{
	{"v1", answerLoopV1(false)},
	{"v1compress", answerLoopV1(true)},
	{"v2", answerLoopV2},
}

func answerLoopV1(compress bool) func(b *testing.B, wire []byte) func() ([]byte, error) {
	return func(b *testing.B, wire []byte) func() ([]byte, error) {
		var r, m dns1.Msg
		buf := make([]byte, 0, udpSize)
		return func() ([]byte, error) {
			if err := r.Unpack(wire); err != nil {
				return nil, err
			}
			answerV1(&m, &r)
			m.Compress = compress
			out, err := m.PackBuffer(buf[:0])
			buf = out
			return out, err
		}
	}
}

func answerLoopV2(b *testing.B, wire []byte) func() ([]byte, error) {
	var r, m dns2.Msg
	buf := make([]byte, 0, udpSize)
	return func() ([]byte, error) {
		if err := unpackV2(&r, wire); err != nil {
			return nil, err
		}
		answerV2(&m, &r)
		return packV2(&m, buf)
	}
}

func BenchmarkAnswer(b *testing.B) {
	for _, l := range libs {
		for _, q := range queries() {
			b.Run(l.name+"/"+q.name, func(b *testing.B) {
				answer := l.answer(b, q.wire)
				b.ReportAllocs()
				for b.Loop() {
					if _, err := answer(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkUnpack unpacks each query into a reused Msg.
func BenchmarkUnpack(b *testing.B) {
	for _, q := range queries() {
		b.Run("v1/"+q.name, func(b *testing.B) {
			var r dns1.Msg
			b.ReportAllocs()
			for b.Loop() {
				if err := r.Unpack(q.wire); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("v2/"+q.name, func(b *testing.B) {
			var r dns2.Msg
			b.ReportAllocs()
			for b.Loop() {
				if err := unpackV2(&r, q.wire); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPack packs the answer to each query, built once, into a reused
// buffer.
func BenchmarkPack(b *testing.B) {
	for _, q := range queries() {
		for _, compress := range []bool{false, true} {
			name := "v1/"
			if compress {
				name = "v1compress/"
			}
			b.Run(name+q.name, func(b *testing.B) {
				var r, m dns1.Msg
				if err := r.Unpack(q.wire); err != nil {
					b.Fatal(err)
				}
				answerV1(&m, &r)
				m.Compress = compress
				buf := make([]byte, 0, udpSize)
				b.ReportAllocs()
				for b.Loop() {
					out, err := m.PackBuffer(buf[:0])
					if err != nil {
						b.Fatal(err)
					}
					buf = out
				}
			})
		}
		b.Run("v2/"+q.name, func(b *testing.B) {
			var r, m dns2.Msg
			if err := unpackV2(&r, q.wire); err != nil {
				b.Fatal(err)
			}
			answerV2(&m, &r)
			buf := make([]byte, 0, udpSize)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := packV2(&m, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestAnswers checks that both libraries give the same answer, as v1 reads
// it back, but for the echoed ECS option, which v2 v0.6.0 gets wrong (see
// TestV2ECSDefects).
func TestAnswers(t *testing.T) {
	for _, l := range libs {
		for _, q := range queries() {
			t.Run(l.name+"/"+q.name, func(t *testing.T) {
				answer := l.answer(nil, q.wire)
				for range 3 { // again, with the reused Msgs and buffer
					out, err := answer()
					if err != nil {
						t.Fatal(err)
					}
					var m dns1.Msg
					if err := m.Unpack(out); err != nil {
						t.Fatalf("unpack answer % x: %v", out, err)
					}
					if m.Id != 0xbeef || !m.Response || !m.Authoritative || !m.RecursionDesired || m.Truncated || m.Rcode != dns1.RcodeSuccess {
						t.Errorf("header: %+v", m.MsgHdr)
					}
					if len(m.Question) != 1 || m.Question[0] != (dns1.Question{Name: qname, Qtype: dns1.TypeA, Qclass: dns1.ClassINET}) {
						t.Errorf("question: %v", m.Question)
					}
					if len(m.Answer) != 1 || m.Answer[0].String() != v1Answer[0].String() {
						t.Errorf("answer: %v, want %v", m.Answer, v1Answer)
					}
					opt := m.IsEdns0()
					if q.name == "plain" {
						if opt != nil || len(m.Extra) != 0 {
							t.Errorf("answer to a query without EDNS has additional records %v", m.Extra)
						}
						continue
					}
					if opt == nil || opt.UDPSize() != udpSize || len(opt.Option) != 1 {
						t.Fatalf("OPT: %v, want a %d buffer and one option", opt, udpSize)
					}
					s, ok := opt.Option[0].(*dns1.EDNS0_SUBNET)
					if !ok || s.Family != 1 || s.SourceNetmask != ecsBits || s.SourceScope != ecsScope {
						t.Errorf("ECS: %v, want family 1, source /%d, scope /%d", opt.Option[0], ecsBits, ecsScope)
					}
					if l.name != "v2" && s.Address.String() != ecsAddr.String() {
						t.Errorf("ECS address %v, want %v", s.Address, ecsAddr)
					}
				}
			})
		}
	}
}

// TestAnswerLength pins the lengths the comment above gives.
func TestAnswerLength(t *testing.T) {
	plain := queries()[0].wire
	for name, want := range map[string]int{"v1": 74, "v1compress": 54, "v2": 74} {
		for _, l := range libs {
			if l.name != name {
				continue
			}
			out, err := l.answer(nil, plain)()
			if err != nil || len(out) != want {
				t.Errorf("%s: answer of %d octets (err %v), want %d", name, len(out), err, want)
			}
		}
	}
}
