package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// unhex decodes hex written with spaces and line breaks for readability.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sigHex is the v2 signature of section 2.2.
const sigHex = "0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a"

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// sameHeader compares headers; the value of a CRC32C TLV is not compared,
// since it depends on the encoding rather than on the header.
func sameHeader(a, b *Header) bool {
	if a.Version != b.Version || a.Command != b.Command || a.Source != b.Source ||
		a.Destination != b.Destination || len(a.TLVs) != len(b.TLVs) {
		return false
	}
	for i := range a.TLVs {
		if a.TLVs[i].Type != b.TLVs[i].Type {
			return false
		}
		if a.TLVs[i].Type != TypeCRC32C && !bytes.Equal(a.TLVs[i].Value, b.TLVs[i].Value) {
			return false
		}
	}
	return true
}

// readAll reads a header from data followed by a tail, and checks that the
// tail is left unread.
func readAll(t testing.TB, data []byte, size int) (*Header, error) {
	t.Helper()
	const tail = "GET / HTTP/1.1\r\n"
	r := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(data), strings.NewReader(tail)), size)
	h, err := Read(r)
	if err != nil {
		return nil, err
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != tail {
		t.Fatalf("after the header %q is left, want %q", rest, tail)
	}
	return h, nil
}

// golden holds byte vectors written by hand from the specification.
var golden = []struct {
	name string
	v1   string // for version 1
	v2   string // hex, for version 2
	h    Header
}{
	{
		name: "v1 tcp4 spec example",
		v1:   "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
		h:    Header{Version: 1, Command: Proxy, Source: ap("192.168.0.1:56324"), Destination: ap("192.168.0.11:443")},
	},
	{
		name: "v1 tcp4 longest",
		v1:   "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
		h:    Header{Version: 1, Command: Proxy, Source: ap("255.255.255.255:65535"), Destination: ap("255.255.255.255:65535")},
	},
	{
		name: "v1 tcp6",
		v1:   "PROXY TCP6 2001:db8::1 2001:db8::2 0 443\r\n",
		h:    Header{Version: 1, Command: Proxy, Source: ap("[2001:db8::1]:0"), Destination: ap("[2001:db8::2]:443")},
	},
	{
		name: "v1 tcp6 ipv4-mapped in hex",
		v1:   "PROXY TCP6 ::ffff:c000:201 ::ffff:0:0 1 2\r\n",
		h:    Header{Version: 1, Command: Proxy, Source: ap("[::ffff:192.0.2.1]:1"), Destination: ap("[::ffff:0.0.0.0]:2")},
	},
	{
		name: "v1 unknown",
		v1:   "PROXY UNKNOWN\r\n",
		h:    Header{Version: 1, Command: Local},
	},
	{
		name: "v2 local",
		v2:   sigHex + "20 00 00 00",
		h:    Header{Version: 2, Command: Local},
	},
	{
		name: "v2 tcp4 spec example",
		v2: sigHex + "21 11 00 0c" +
			"c0 a8 00 01  c0 a8 00 0b  dc 04  01 bb",
		h: Header{Version: 2, Command: Proxy, Source: ap("192.168.0.1:56324"), Destination: ap("192.168.0.11:443")},
	},
	{
		name: "v2 tcp6",
		v2: sigHex + "21 21 00 24" +
			"20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01" +
			"20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 02" +
			"04 d2  01 bb",
		h: Header{Version: 2, Command: Proxy, Source: ap("[2001:db8::1]:1234"), Destination: ap("[2001:db8::2]:443")},
	},
	{
		name: "v2 tcp4 with TLVs",
		v2: sigHex + "21 11 00 22" + // 12 + 14 + 3 + 5
			"c0 00 02 01  c6 33 64 07  00 50  1f 90" +
			"02 00 0b 65 78 61 6d 70 6c 65 2e 63 6f 6d" + // authority example.com
			"04 00 00" + // empty noop
			"01 00 02 68 32", // alpn h2
		h: Header{Version: 2, Command: Proxy, Source: ap("192.0.2.1:80"), Destination: ap("198.51.100.7:8080"),
			TLVs: []TLV{{TypeAuthority, []byte("example.com")}, {TypeNoop, []byte{}}, {TypeALPN, []byte("h2")}}},
	},
	{
		// The checksum was computed by an independent bitwise CRC-32C.
		name: "v2 tcp4 with CRC32C",
		v2: sigHex + "21 11 00 13" +
			"c0 a8 00 01  c0 a8 00 0b  dc 04  01 bb" +
			"03 00 04 1c 1a e9 c6",
		h: Header{Version: 2, Command: Proxy, Source: ap("192.168.0.1:56324"), Destination: ap("192.168.0.11:443"),
			TLVs: []TLV{{TypeCRC32C, []byte{0x1c, 0x1a, 0xe9, 0xc6}}}},
	},
	{
		name: "v2 local with TLV",
		v2:   sigHex + "20 00 00 05" + "05 00 02 ab cd",
		h:    Header{Version: 2, Command: Local, TLVs: []TLV{{TypeUniqueID, []byte{0xab, 0xcd}}}},
	},
	{
		name: "v2 proxy unspec with TLV",
		v2:   sigHex + "21 00 00 03" + "30 00 00",
		h:    Header{Version: 2, Command: Proxy, TLVs: []TLV{{TypeNetNS, []byte{}}}},
	},
}

func TestGolden(t *testing.T) {
	for _, tt := range golden {
		t.Run(tt.name, func(t *testing.T) {
			want := []byte(tt.v1)
			var got []byte
			var err error
			if tt.v2 != "" {
				want = unhex(t, tt.v2)
				got, err = tt.h.AppendV2(nil)
			} else {
				got, err = tt.h.AppendV1(nil)
			}
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("encoded\n%q\nwant\n%q", got, want)
			}
			for _, size := range []int{16, 4096} {
				h, err := readAll(t, want, size)
				if err != nil {
					t.Fatalf("Read (buffer %d): %v", size, err)
				}
				if !sameHeader(h, &tt.h) {
					t.Errorf("Read (buffer %d) = %+v, want %+v", size, *h, tt.h)
				}
			}
		})
	}
}

// TestReadAccepts covers inputs the encoders do not produce but the
// specification allows.
func TestReadAccepts(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Header
	}{
		{"v1 unknown with addresses", "PROXY UNKNOWN ffff:f::f:ffff ffff:f::f:ffff 65535 65535\r\n", Header{Version: 1, Command: Local}},
		{"v1 unknown longest", "PROXY UNKNOWN " + strings.Repeat("x", 107-16) + "\r\n", Header{Version: 1, Command: Local}},
		{"v1 tcp6 longest", "PROXY TCP6 " + strings.Repeat("ffff:", 7) + "ffff " + strings.Repeat("FFFF:", 7) + "FFFF 65535 65535\r\n",
			Header{Version: 1, Command: Proxy, Source: ap("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"), Destination: ap("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")}},
		{"v1 tcp6 dotted ipv4-mapped (inet_ntop)", "PROXY TCP6 ::ffff:192.0.2.1 ::1 10 0\r\n",
			Header{Version: 1, Command: Proxy, Source: ap("[::ffff:192.0.2.1]:10"), Destination: ap("[::1]:0")}},
		{"v2 local ignores addresses", sigHex + "20 11 00 0c" + "c0 a8 00 01 c0 a8 00 0b dc 04 01 bb", Header{Version: 2, Command: Local}},
		{"v2 local ignores a malformed block", sigHex + "20 00 00 02" + "ff ff", Header{Version: 2, Command: Local}},
		{"v2 local with short block for its family", sigHex + "20 21 00 00", Header{Version: 2, Command: Local}},
		{"v2 udp4 falls back to unspec", sigHex + "21 12 00 0c" + "c0 a8 00 01 c0 a8 00 0b dc 04 01 bb", Header{Version: 2, Command: Proxy}},
		{"v2 unix stream falls back to unspec", sigHex + "21 31 00 d8" + strings.Repeat("00", 216), Header{Version: 2, Command: Proxy}},
		{"v2 ipv4-mapped tcp6 stays ipv6", sigHex + "21 21 00 24" +
			"00 00 00 00 00 00 00 00 00 00 ff ff c0 00 02 01" + strings.Repeat("00", 15) + "01" + "00 01 00 02",
			Header{Version: 2, Command: Proxy, Source: ap("[::ffff:192.0.2.1]:1"), Destination: ap("[::1]:2")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			if strings.HasPrefix(tt.in, sigHex) {
				in = unhex(t, tt.in)
			}
			for _, size := range []int{16, 4096} {
				h, err := readAll(t, in, size)
				if err != nil {
					t.Fatalf("Read (buffer %d): %v", size, err)
				}
				if !sameHeader(h, &tt.want) {
					t.Errorf("Read (buffer %d) = %+v, want %+v", size, *h, tt.want)
				}
			}
		})
	}
}

func TestReadRejects(t *testing.T) {
	v4 := "c0 a8 00 01 c0 a8 00 0b dc 04 01 bb"
	tests := []struct {
		name string
		in   string // text, or hex when it starts with the v2 signature
		want string // substring of the error
	}{
		{"not proxy", "GET / HTTP/1.1\r\n", "not a PROXY protocol header: first byte 0x47"},
		{"lower case", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY protocol header"},
		{"v1 bad signature", "PROXX TCP4 1.2.3.4 5.6.7.8 1 2\r\n", `v1: line does not start with "PROXY ": "PROXX"`},
		{"v1 no space after PROXY", "PROXYTCP4\r\n", `does not start with "PROXY "`},
		{"v1 truncated", "PROXY TCP4 1.2.3.4", "v1: header truncated: unexpected EOF"},
		{"v1 truncated after CR", "PROXY UNKNOWN\r", "v1: header truncated"},
		{"v1 LF alone", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "v1: LF without CR"},
		{"v1 CR alone", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\n", "v1: CR not followed by LF"},
		{"v1 too long", "PROXY UNKNOWN " + strings.Repeat("x", 107-15) + "\r\n", "v1: no CRLF in the first 107 bytes"},
		{"v1 too long at CR", "PROXY UNKNOWN " + strings.Repeat("x", 106-14) + "\r\n", "v1: no CRLF in the first 107 bytes"},
		{"v1 empty protocol", "PROXY \r\n", `v1: protocol "" is not TCP4, TCP6 or UNKNOWN`},
		{"v1 bad protocol", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", `protocol "UDP4" is not`},
		{"v1 unknown glued", "PROXY UNKNOWNX\r\n", `protocol "UNKNOWNX" is not`},
		{"v1 no addresses", "PROXY TCP4\r\n", "v1: TCP4 without addresses"},
		{"v1 double space", "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "exactly one space"},
		{"v1 three fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "needs 4 fields"},
		{"v1 five fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "needs 4 fields"},
		{"v1 trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "needs 4 fields"},
		{"v1 tab", "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "needs 4 fields"},
		{"v1 port leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", `bad source port "01": want 0 to 65535 without leading zeros`},
		{"v1 port too large", "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", `bad destination port "65536": above 65535`},
		{"v1 port too long", "PROXY TCP4 1.2.3.4 5.6.7.8 1 100000\r\n", `bad destination port "100000"`},
		{"v1 port negative", "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", `bad source port "-1": not a decimal number`},
		{"v1 port plus", "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", `bad source port "+1": not a decimal number`},
		{"v1 ipv4 leading zero", "PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", `bad source address "1.2.3.04"`},
		{"v1 ipv4 short", "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", `bad source address "1.2.3"`},
		{"v1 tcp4 with ipv6", "PROXY TCP4 1.2.3.4 ::1 1 2\r\n", `destination address "::1" is not IPv4 as TCP4 announces`},
		{"v1 tcp6 with ipv4", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", `source address "1.2.3.4" is not IPv6 as TCP6 announces`},
		{"v1 zone", "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "zones are not allowed"},
		{"v2 bad signature", "0d 0a 0d 0a 00 0d 0a 51 55 49 54 0b 21 11 00 0c" + v4, "v2: bad signature 0d 0a 0d 0a 00 0d 0a 51 55 49 54 0b"},
		{"v2 bad signature short", "0d 0a 0d 0b", "v2: bad signature 0d 0a 0d 0b"},
		{"v2 truncated head", sigHex + "21 11", "v2: header truncated: unexpected EOF"},
		{"v2 truncated block", sigHex + "21 11 00 0c c0 a8 00", "v2: header truncated: unexpected EOF"},
		{"v2 version 1", sigHex + "11 11 00 0c" + v4, "v2: version 1 is not 2"},
		{"v2 version 3", sigHex + "31 11 00 0c" + v4, "v2: version 3 is not 2"},
		{"v2 command 2", sigHex + "22 11 00 0c" + v4, "v2: command 0x2 is neither LOCAL (0x0) nor PROXY (0x1)"},
		{"v2 command 15", sigHex + "2f 00 00 00", "command 0xf"},
		{"v2 family 0x41", sigHex + "21 41 00 0c" + v4, "address family and transport 0x41 is not one the specification defines"},
		{"v2 transport 0x13", sigHex + "21 13 00 0c" + v4, "transport 0x13"},
		{"v2 family 0x10", sigHex + "21 10 00 0c" + v4, "transport 0x10"},
		{"v2 tcp4 block too short", sigHex + "21 11 00 0b" + "c0 a8 00 01 c0 a8 00 0b dc 04 01", "v2: block of 11 bytes too short for family 0x11, which needs 12"},
		{"v2 tcp6 block too short", sigHex + "21 21 00 0c" + v4, "too short for family 0x21, which needs 36"},
		{"v2 stray bytes", sigHex + "21 11 00 0e" + v4 + "01 00", "v2: 2 stray bytes after the TLVs"},
		{"v2 TLV overrun", sigHex + "21 11 00 10" + v4 + "02 00 05 61", "v2: TLV type 0x02 of length 5 overruns the header by 4 bytes"},
		{"v2 CRC mismatch", sigHex + "21 11 00 13" + v4 + "03 00 04 1c 1a e9 c7", "v2: CRC32C 0x1c1ae9c7 does not match the header's 0x1c1ae9c6"},
		{"v2 CRC length", sigHex + "21 11 00 12" + v4 + "03 00 03 1c 1a e9", "v2: CRC32C TLV of length 3, want 4"},
		{"v2 two CRCs", sigHex + "21 11 00 1a" + v4 + "03 00 04 00 00 00 00 03 00 04 00 00 00 00", "more than one CRC32C TLV"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			if strings.HasPrefix(tt.in, "0d 0a") {
				in = unhex(t, tt.in)
			}
			for _, size := range []int{16, 4096} {
				h, err := Read(bufio.NewReaderSize(bytes.NewReader(in), size))
				if err == nil {
					t.Fatalf("Read (buffer %d) = %+v, want error %q", size, *h, tt.want)
				}
				if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "proxyproto: ") {
					t.Errorf("Read (buffer %d) error = %q, want it to contain %q", size, err, tt.want)
				}
			}
		})
	}
}

func TestReadEOF(t *testing.T) {
	_, err := Read(bufio.NewReader(strings.NewReader("")))
	if !errors.Is(err, io.EOF) {
		t.Errorf("empty input: %v, want io.EOF", err)
	}
	_, err = Read(bufio.NewReader(strings.NewReader("PROXY TCP4 1.2")))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut v1: %v, want io.ErrUnexpectedEOF", err)
	}
	_, err = Read(bufio.NewReader(bytes.NewReader(unhex(t, sigHex+"21 11 00 0c c0"))))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut v2: %v, want io.ErrUnexpectedEOF", err)
	}
}

// TestReadFailsFast checks that Read turns a client away on its first bytes,
// without waiting for more, and waits for a header that arrives in pieces.
func TestReadFailsFast(t *testing.T) {
	for _, in := range []string{"GET ", "PRO\r", "PROXY\t", "PROXY TCP4 1.2.3.4\n", "\r\n\r\n\x00\r\nX"} {
		client, server := net.Pipe()
		go func() { _, _ = client.Write([]byte(in)) }() // then stays open
		_ = server.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := Read(bufio.NewReader(server))
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%q: %v, want an immediate syntax error", in, err)
		}
		client.Close()
		server.Close()
	}

	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	line := "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"
	go func() {
		for i := range len(line) {
			_, _ = client.Write([]byte(line[i : i+1]))
		}
		_, _ = client.Write([]byte("hello"))
	}()
	_ = server.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(server)
	h, err := Read(r)
	if err != nil {
		t.Fatalf("byte by byte: %v", err)
	}
	if h.Source != ap("192.0.2.1:56324") {
		t.Errorf("byte by byte: source %v", h.Source)
	}
	rest := make([]byte, 5)
	if _, err := io.ReadFull(r, rest); err != nil || string(rest) != "hello" {
		t.Errorf("after the header: %q, %v", rest, err)
	}
}

func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name   string
		h      Header
		v1, v2 string // error substrings; "" for none
	}{
		{"bad command", Header{Command: 2}, "neither LOCAL nor PROXY", "neither LOCAL nor PROXY"},
		{"only source", Header{Command: Proxy, Source: ap("1.2.3.4:1")}, "both be set or both be unset", "both be set"},
		{"mixed families", Header{Command: Proxy, Source: ap("1.2.3.4:1"), Destination: ap("[::1]:2")}, "different address families", "different address families"},
		{"4 and 4in6", Header{Command: Proxy, Source: ap("1.2.3.4:1"), Destination: ap("[::ffff:1.2.3.4]:2")}, "different address families", "different address families"},
		{"v1 TLVs", Header{Command: Proxy, TLVs: []TLV{{TypeNoop, nil}}}, "v1 cannot carry TLVs", ""},
		{"CRC length", Header{Command: Local, TLVs: []TLV{{TypeCRC32C, []byte{1}}}}, "v1 cannot", "CRC32C TLV value must be 4 bytes"},
		{"two CRCs", Header{Command: Local, TLVs: []TLV{{TypeCRC32C, make([]byte, 4)}, {TypeCRC32C, make([]byte, 4)}}}, "v1 cannot", "more than one CRC32C TLV"},
		{"too long", Header{Command: Proxy, Source: ap("1.2.3.4:1"), Destination: ap("1.2.3.4:2"),
			TLVs: []TLV{{TypeNoop, make([]byte, 65535-12-3+1)}}}, "v1 cannot", "longer than 65535 bytes"},
		{"longest", Header{Command: Proxy, Source: ap("1.2.3.4:1"), Destination: ap("1.2.3.4:2"),
			TLVs: []TLV{{TypeNoop, make([]byte, 65535-12-3)}}}, "v1 cannot", ""},
		{"local ignores addresses", Header{Command: Local, Source: ap("1.2.3.4:1")}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct {
				enc  func([]byte) ([]byte, error)
				want string
			}{{tt.h.AppendV1, tt.v1}, {tt.h.AppendV2, tt.v2}} {
				b, err := c.enc([]byte("x"))
				switch {
				case c.want == "" && err != nil:
					t.Errorf("unexpected error %v", err)
				case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
					t.Errorf("error = %v, want %q", err, c.want)
				case err != nil && string(b) != "x":
					t.Errorf("on error the buffer became %q", b)
				}
			}
		})
	}
}

func TestHeaderFor(t *testing.T) {
	tcp := func(s string) *net.TCPAddr { return net.TCPAddrFromAddrPort(ap(s)) }
	tests := []struct {
		name          string
		client, local net.Addr
		want          Header
	}{
		{"ipv4", tcp("192.0.2.1:5000"), tcp("198.51.100.7:443"),
			Header{Command: Proxy, Source: ap("192.0.2.1:5000"), Destination: ap("198.51.100.7:443")}},
		{"ipv6", tcp("[2001:db8::1]:5000"), tcp("[2001:db8::2]:443"),
			Header{Command: Proxy, Source: ap("[2001:db8::1]:5000"), Destination: ap("[2001:db8::2]:443")}},
		{"dual-stack listener unmapped", tcp("[::ffff:192.0.2.1]:5000"), tcp("[::ffff:198.51.100.7]:443"),
			Header{Command: Proxy, Source: ap("192.0.2.1:5000"), Destination: ap("198.51.100.7:443")}},
		{"16-byte net.IP unmapped", &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1}, &net.TCPAddr{IP: net.ParseIP("192.0.2.2"), Port: 2},
			Header{Command: Proxy, Source: ap("192.0.2.1:1"), Destination: ap("192.0.2.2:2")}},
		{"mixed stays ipv6", tcp("[::ffff:192.0.2.1]:5000"), tcp("[2001:db8::2]:443"),
			Header{Command: Proxy, Source: ap("[::ffff:192.0.2.1]:5000"), Destination: ap("[2001:db8::2]:443")}},
		{"zone dropped", &net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 1, Zone: "eth0"}, tcp("[fe80::2]:2"),
			Header{Command: Proxy, Source: ap("[fe80::1]:1"), Destination: ap("[fe80::2]:2")}},
		{"unix", &net.UnixAddr{Name: "@", Net: "unix"}, &net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, Header{Command: Local}},
		{"nil", nil, tcp("1.2.3.4:1"), Header{Command: Local}},
		{"no IP", &net.TCPAddr{Port: 1}, tcp("1.2.3.4:1"), Header{Command: Local}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, v := range []int{1, 2} {
				h, err := HeaderFor(tt.client, tt.local, v)
				if err != nil {
					t.Fatal(err)
				}
				want := tt.want
				want.Version = v
				if !sameHeader(h, &want) {
					t.Errorf("v%d: %+v, want %+v", v, *h, want)
				}
				// Whatever HeaderFor builds, both encoders accept.
				if _, err := h.AppendV1(nil); err != nil {
					t.Errorf("AppendV1: %v", err)
				}
				if _, err := h.AppendV2(nil); err != nil {
					t.Errorf("AppendV2: %v", err)
				}
			}
		})
	}
	if _, err := HeaderFor(nil, nil, 3); err == nil || err.Error() != "proxyproto: version 3 is not 1 or 2" {
		t.Errorf("version 3: %v", err)
	}
}

// TestAppendAllocs checks that the encoders only append.
func TestAppendAllocs(t *testing.T) {
	for _, h := range benchHeaders() {
		buf := make([]byte, 0, 512)
		for name, enc := range map[string]func([]byte) ([]byte, error){"v1": h.h.AppendV1, "v2": h.h.AppendV2} {
			if name == "v1" && len(h.h.TLVs) > 0 {
				continue
			}
			if n := testing.AllocsPerRun(100, func() { _, _ = enc(buf[:0]) }); n != 0 {
				t.Errorf("%s %s: %v allocations", h.name, name, n)
			}
		}
	}
}

func TestCommandString(t *testing.T) {
	for c, want := range map[Command]string{Local: "LOCAL", Proxy: "PROXY", 7: "Command(7)"} {
		if got := c.String(); got != want {
			t.Errorf("%d: %q, want %q", byte(c), got, want)
		}
	}
}
