package proxyproto

import (
	"bufio"
	"bytes"
	"net/netip"
	"testing"
)

// FuzzRead feeds arbitrary bytes to Read. It must not panic, both of its
// reading paths (large and small buffers) must agree, and a header it accepts
// must encode, in the same version, to bytes that read back to the same
// header and are consumed exactly.
func FuzzRead(f *testing.F) {
	for _, g := range golden {
		if g.v2 != "" {
			f.Add(unhex(f, g.v2))
		} else {
			f.Add([]byte(g.v1))
		}
	}
	f.Add([]byte("PROXY TCP6 ::ffff:192.0.2.1 ::1 10 0\r\n"))
	f.Add([]byte("PROXY UNKNOWN whatever\r\n"))
	f.Add([]byte("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"))
	f.Add(unhex(f, sigHex+"21 12 00 0c c0 a8 00 01 c0 a8 00 0b dc 04 01 bb"))
	f.Add(unhex(f, sigHex+"20 00 00 02 ff ff"))
	f.Add(unhex(f, sigHex+"21 11 00 13 c0 a8 00 01 c0 a8 00 0b dc 04 01 bb 03 00 04 1c 1a e9 c6"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := Read(bufio.NewReaderSize(bytes.NewReader(data), 4096))
		h2, err2 := Read(bufio.NewReaderSize(bytes.NewReader(data), 16))
		if (err == nil) != (err2 == nil) || err != nil && err.Error() != err2.Error() {
			t.Fatalf("buffer 4096: %v; buffer 16: %v", err, err2)
		}
		if err != nil {
			return
		}
		if !sameHeader(h, h2) {
			t.Fatalf("buffer 4096: %+v; buffer 16: %+v", *h, *h2)
		}
		var enc []byte
		if h.Version == 1 {
			enc, err = h.AppendV1(nil)
		} else {
			enc, err = h.AppendV2(nil)
		}
		if err != nil {
			t.Fatalf("%+v read from %q does not encode: %v", *h, data, err)
		}
		back, err := readAll(t, enc, 4096)
		if err != nil {
			t.Fatalf("%+v encoded as %q does not read back: %v", *h, enc, err)
		}
		if !sameHeader(back, h) {
			t.Fatalf("%q read as %+v, encoded as %q, read back as %+v", data, *h, enc, *back)
		}
	})
}

// FuzzRoundTrip encodes arbitrary headers in both versions; whatever an
// encoder accepts must read back as the same header, bar what the version
// cannot express.
func FuzzRoundTrip(f *testing.F) {
	f.Add(byte(1), false, []byte{192, 0, 2, 1}, []byte{198, 51, 100, 7}, uint16(56324), uint16(443), []byte{})
	f.Add(byte(1), true, []byte{0x20, 1, 0xd, 0xb8, 15: 1}, []byte{0x20, 1, 0xd, 0xb8, 15: 2}, uint16(0), uint16(65535), []byte{2, 3, 'a', 'b', 'c'})
	f.Add(byte(0), false, []byte{}, []byte{}, uint16(0), uint16(0), []byte{3, 4, 0, 0, 0, 0, 4, 0})
	f.Add(byte(1), true, []byte{10: 0xff, 11: 0xff, 12: 192, 15: 1}, []byte{15: 1}, uint16(1), uint16(2), []byte{0x20, 0})
	f.Fuzz(func(t *testing.T, cmd byte, v6 bool, src, dst []byte, sport, dport uint16, tlvData []byte) {
		h := Header{Command: Command(cmd)}
		h.Source = netip.AddrPortFrom(addrFrom(src, v6), sport)
		h.Destination = netip.AddrPortFrom(addrFrom(dst, v6), dport)
		// tlvData is a list of (type, length, value) with one-byte lengths.
		for len(tlvData) >= 2 {
			n := min(int(tlvData[1]), len(tlvData)-2)
			h.TLVs = append(h.TLVs, TLV{Type: tlvData[0], Value: tlvData[2 : 2+n]})
			tlvData = tlvData[2+n:]
		}
		for _, version := range []int{1, 2} {
			var enc []byte
			var err error
			if version == 1 {
				enc, err = h.AppendV1(nil)
			} else {
				enc, err = h.AppendV2(nil)
			}
			if err != nil {
				if !encodeMayFail(&h, version) {
					t.Fatalf("v%d: %+v: %v", version, h, err)
				}
				continue
			}
			if version == 1 && len(enc) > maxV1Len {
				t.Fatalf("v1 line of %d bytes: %q", len(enc), enc)
			}
			got, err := readAll(t, enc, 4096)
			if err != nil {
				t.Fatalf("v%d: %+v encoded as %q: %v", version, h, enc, err)
			}
			want := expect(h, version)
			if !sameHeader(got, &want) {
				t.Fatalf("v%d: %+v encoded as %q read back as %+v, want %+v", version, h, enc, *got, want)
			}
		}
	})
}

// addrFrom makes an address of the wanted family from fuzz bytes; too few
// bytes give the unset address.
func addrFrom(b []byte, v6 bool) netip.Addr {
	switch {
	case v6 && len(b) >= 16:
		return netip.AddrFrom16([16]byte(b))
	case !v6 && len(b) >= 4:
		return netip.AddrFrom4([4]byte(b))
	}
	return netip.Addr{}
}

// encodeMayFail reports whether an encoder is allowed to refuse h.
func encodeMayFail(h *Header, version int) bool {
	if h.Command != Local && h.Command != Proxy {
		return true
	}
	if version == 1 && len(h.TLVs) > 0 {
		return true
	}
	if h.Command == Proxy && h.Source.Addr().IsValid() != h.Destination.Addr().IsValid() {
		return true
	}
	crcs := 0
	for _, t := range h.TLVs {
		if t.Type == TypeCRC32C {
			crcs++
			if len(t.Value) != 4 {
				return true
			}
		}
	}
	return version == 2 && crcs > 1
}

// expect is the header that reading back an encoding of h must give.
func expect(h Header, version int) Header {
	h.Version = version
	if !h.Source.Addr().IsValid() || !h.Destination.Addr().IsValid() {
		h.Source, h.Destination = netip.AddrPort{}, netip.AddrPort{} // ports go too
	}
	if h.Command == Local || version == 1 && !h.Source.IsValid() {
		h.Command = Local
		h.Source, h.Destination = netip.AddrPort{}, netip.AddrPort{}
	}
	if version == 1 {
		h.TLVs = nil
	}
	if len(h.TLVs) == 0 {
		h.TLVs = nil
	}
	return h
}

// benchHeaders are typical headers for benchmarks and allocation tests.
func benchHeaders() []struct {
	name string
	h    Header
} {
	return []struct {
		name string
		h    Header
	}{
		{"tcp4", Header{Command: Proxy, Source: ap("192.0.2.123:56324"), Destination: ap("198.51.100.7:443")}},
		{"tcp6", Header{Command: Proxy, Source: ap("[2001:db8:85a3::8a2e:370:7334]:56324"), Destination: ap("[2001:db8::2]:443")}},
		{"tcp4-mapped", Header{Command: Proxy, Source: ap("[::ffff:192.0.2.123]:56324"), Destination: ap("[::ffff:198.51.100.7]:443")}},
		{"local", Header{Command: Local}},
		{"tcp4+tlvs+crc", Header{Command: Proxy, Source: ap("192.0.2.123:56324"), Destination: ap("198.51.100.7:443"),
			TLVs: []TLV{{TypeAuthority, []byte("www.example.com")}, {TypeALPN, []byte("h2")}, {TypeCRC32C, make([]byte, 4)}}}},
	}
}

func BenchmarkAppendV1(b *testing.B) {
	for _, bh := range benchHeaders() {
		if len(bh.h.TLVs) > 0 {
			continue
		}
		b.Run(bh.name, func(b *testing.B) {
			buf := make([]byte, 0, 128)
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = bh.h.AppendV1(buf[:0])
			}
		})
	}
}

func BenchmarkAppendV2(b *testing.B) {
	for _, bh := range benchHeaders() {
		b.Run(bh.name, func(b *testing.B) {
			buf := make([]byte, 0, 128)
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = bh.h.AppendV2(buf[:0])
			}
		})
	}
}

func BenchmarkRead(b *testing.B) {
	for _, bh := range benchHeaders() {
		for _, version := range []int{1, 2} {
			var enc []byte
			var err error
			if version == 1 {
				enc, err = bh.h.AppendV1(nil)
			} else {
				enc, err = bh.h.AppendV2(nil)
			}
			if err != nil {
				continue
			}
			b.Run(bh.name+"/v"+string(rune('0'+version)), func(b *testing.B) {
				src := bytes.NewReader(enc)
				r := bufio.NewReader(src)
				b.ReportAllocs()
				for b.Loop() {
					src.Reset(enc)
					r.Reset(src)
					if _, err := Read(r); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
