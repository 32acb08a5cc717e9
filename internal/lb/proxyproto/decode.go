package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/netip"
	"strings"
)

// Read reads one PROXY protocol header, of either version, from r and consumes
// exactly its bytes: what follows stays in r for the application.
//
// It decides the version from the first byte and fails as soon as the bytes
// cannot begin a valid header, so a client that does not speak the protocol is
// turned away without waiting for more input. A version 1 line must match the
// specification exactly (single spaces, canonical addresses of the announced
// family, ports without leading zeros, CRLF within 107 bytes); "PROXY UNKNOWN"
// reads as a Local header. A version 2 header must carry version 2, the LOCAL
// or PROXY command, a defined family, an address block as long as its family
// needs, well-formed TLVs and, if it has one, a matching CRC32C. For a LOCAL
// header the specification asks receivers to accept the connection whatever
// the block holds, so Read then ignores the addresses and keeps the TLVs only
// if they are well-formed.
//
// A header cut short by the end of input returns an error wrapping
// io.ErrUnexpectedEOF; input that ends before the first byte, io.EOF.
// Callers should bound the wait with a read deadline on the connection.
func Read(r *bufio.Reader) (*Header, error) {
	p, err := r.Peek(1)
	if err != nil {
		return nil, fmt.Errorf("proxyproto: read header: %w", err)
	}
	switch p[0] {
	case 'P':
		return readV1(r)
	case signature[0]:
		return readV2(r)
	}
	return nil, fmt.Errorf("proxyproto: not a PROXY protocol header: first byte %#02x is neither 'P' (v1) nor '\\r' (v2)", p[0])
}

// truncated wraps the error that cut a header short.
func truncated(version int, err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("proxyproto: v%d: header truncated: %w", version, err)
}

func readV1(r *bufio.Reader) (*Header, error) {
	if r.Size() < maxV1Len {
		return readV1Bytewise(r)
	}
	// Peek what has arrived, and one byte more while the line is incomplete.
	k := r.Buffered()
	for {
		p, err := r.Peek(min(k, maxV1Len))
		end, serr := scanV1(p)
		if serr != nil {
			return nil, serr
		}
		if end > 0 {
			h, perr := parseV1(p[:end])
			if perr != nil {
				return nil, perr
			}
			_, _ = r.Discard(end) // buffered: cannot fail
			return h, nil
		}
		if err != nil {
			return nil, truncated(1, err)
		}
		k = max(len(p)+1, r.Buffered())
	}
}

// readV1Bytewise is readV1 for readers whose buffer cannot hold a whole line.
func readV1Bytewise(r *bufio.Reader) (*Header, error) {
	var line [maxV1Len]byte
	for n := 0; ; {
		c, err := r.ReadByte()
		if err != nil {
			return nil, truncated(1, err)
		}
		line[n] = c
		n++
		end, err := scanV1(line[:n])
		if err != nil {
			return nil, err
		}
		if end > 0 {
			return parseV1(line[:end])
		}
	}
}

// scanV1 looks for the end of a v1 line in its first bytes p. It returns the
// length of the line, CRLF included, 0 if p holds no complete line yet, or an
// error as soon as p cannot begin a valid line.
func scanV1(p []byte) (int, error) {
	const prefix = "PROXY "
	for i, c := range p {
		switch {
		case i < len(prefix) && c != prefix[i]:
			return 0, fmt.Errorf("proxyproto: v1: line does not start with %q: %q", prefix, p[:i+1])
		case c == '\n':
			return 0, errors.New("proxyproto: v1: LF without CR")
		case c == '\r':
			if i+1 == len(p) {
				break
			}
			if p[i+1] != '\n' {
				return 0, errors.New("proxyproto: v1: CR not followed by LF")
			}
			return i + 2, nil
		}
	}
	if len(p) >= maxV1Len {
		return 0, fmt.Errorf("proxyproto: v1: no CRLF in the first %d bytes", maxV1Len)
	}
	return 0, nil
}

// parseV1 parses a complete v1 line, "PROXY " through CRLF.
func parseV1(line []byte) (*Header, error) {
	body := line[len("PROXY ") : len(line)-2]
	if string(body) == "UNKNOWN" || bytes.HasPrefix(body, []byte("UNKNOWN ")) {
		// Anything may follow "UNKNOWN " up to the CRLF; it is ignored.
		return &Header{Version: 1, Command: Local}, nil
	}
	s := string(body)
	proto, rest, _ := strings.Cut(s, " ")
	switch proto {
	case "TCP4", "TCP6":
	default:
		return nil, fmt.Errorf("proxyproto: v1: protocol %q is not TCP4, TCP6 or UNKNOWN", proto)
	}
	if rest == "" {
		return nil, fmt.Errorf("proxyproto: v1: %s without addresses", proto)
	}
	var f [4]string
	for i := range f {
		var ok bool
		f[i], rest, ok = strings.Cut(rest, " ")
		if f[i] == "" {
			return nil, fmt.Errorf("proxyproto: v1: %s fields must be separated by exactly one space: %q", proto, s)
		}
		if ok != (i < 3) {
			return nil, fmt.Errorf("proxyproto: v1: %s needs 4 fields (source and destination address and port): %q", proto, s)
		}
	}
	v6 := proto == "TCP6"
	src, err := parseAddrV1(f[0], v6, "source")
	if err != nil {
		return nil, err
	}
	dst, err := parseAddrV1(f[1], v6, "destination")
	if err != nil {
		return nil, err
	}
	sp, err := parsePortV1(f[2], "source")
	if err != nil {
		return nil, err
	}
	dp, err := parsePortV1(f[3], "destination")
	if err != nil {
		return nil, err
	}
	return &Header{
		Version:     1,
		Command:     Proxy,
		Source:      netip.AddrPortFrom(src, sp),
		Destination: netip.AddrPortFrom(dst, dp),
	}, nil
}

func parseAddrV1(s string, v6 bool, which string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return a, fmt.Errorf("proxyproto: v1: bad %s address %q: %w", which, s, err)
	case a.Zone() != "":
		return a, fmt.Errorf("proxyproto: v1: bad %s address %q: zones are not allowed", which, s)
	case v6 && !a.Is6():
		return a, fmt.Errorf("proxyproto: v1: %s address %q is not IPv6 as TCP6 announces", which, s)
	case !v6 && !a.Is4():
		return a, fmt.Errorf("proxyproto: v1: %s address %q is not IPv4 as TCP4 announces", which, s)
	}
	return a, nil
}

func parsePortV1(b string, which string) (uint16, error) {
	if len(b) > 5 || len(b) > 1 && b[0] == '0' {
		return 0, fmt.Errorf("proxyproto: v1: bad %s port %q: want 0 to 65535 without leading zeros", which, b)
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("proxyproto: v1: bad %s port %q: not a decimal number", which, b)
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, fmt.Errorf("proxyproto: v1: bad %s port %q: above 65535", which, b)
	}
	return uint16(n), nil
}

func readV2(r *bufio.Reader) (*Header, error) {
	// Check the signature on what has arrived before waiting for the rest.
	p, _ := r.Peek(min(r.Buffered(), v2HeadLen))
	if err := checkSignature(p); err != nil {
		return nil, err
	}
	p, err := r.Peek(v2HeadLen)
	if err := checkSignature(p); err != nil {
		return nil, err
	}
	if err != nil {
		return nil, truncated(2, err)
	}
	if v := p[12] >> 4; v != 2 {
		return nil, fmt.Errorf("proxyproto: v2: version %d is not 2", v)
	}
	cmd := Command(p[12] & 0xf)
	if cmd != Local && cmd != Proxy {
		return nil, fmt.Errorf("proxyproto: v2: command %#x is neither LOCAL (0x0) nor PROXY (0x1)", byte(cmd))
	}
	fam := p[13]
	alen := addrLen(fam)
	if alen < 0 {
		return nil, fmt.Errorf("proxyproto: v2: address family and transport %#02x is not one the specification defines", fam)
	}
	n := int(binary.BigEndian.Uint16(p[14:16]))
	if cmd == Proxy && n < alen {
		return nil, fmt.Errorf("proxyproto: v2: block of %d bytes too short for family %#02x, which needs %d", n, fam, alen)
	}
	// The whole header is kept: the CRC32C covers it, TLV values point into it.
	buf := make([]byte, v2HeadLen+n)
	copy(buf, p)
	_, _ = r.Discard(v2HeadLen) // peeked: cannot fail
	if _, err := io.ReadFull(r, buf[v2HeadLen:]); err != nil {
		return nil, truncated(2, err)
	}
	h := &Header{Version: 2, Command: cmd}
	if cmd == Local {
		if n >= alen {
			if tlvs, err := parseTLVs(buf, v2HeadLen+alen); err == nil {
				h.TLVs = tlvs
			}
		}
		return h, nil
	}
	block := buf[v2HeadLen:]
	switch fam {
	case famTCP4:
		h.Source = netip.AddrPortFrom(netip.AddrFrom4([4]byte(block[0:4])), binary.BigEndian.Uint16(block[8:]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom4([4]byte(block[4:8])), binary.BigEndian.Uint16(block[10:]))
	case famTCP6:
		h.Source = netip.AddrPortFrom(netip.AddrFrom16([16]byte(block[0:16])), binary.BigEndian.Uint16(block[32:]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom16([16]byte(block[16:32])), binary.BigEndian.Uint16(block[34:]))
	}
	if h.TLVs, err = parseTLVs(buf, v2HeadLen+alen); err != nil {
		return nil, err
	}
	return h, nil
}

// checkSignature checks the first bytes p of a v2 header.
func checkSignature(p []byte) error {
	if n := min(len(p), len(signature)); string(p[:n]) != signature[:n] {
		return fmt.Errorf("proxyproto: v2: bad signature % x", p[:n])
	}
	return nil
}

// parseTLVs parses the TLVs of the v2 header hdr from offset off to its end,
// and verifies a CRC32C TLV if there is one.
func parseTLVs(hdr []byte, off int) ([]TLV, error) {
	count := 0
	for p := hdr[off:]; len(p) > 0; count++ {
		if len(p) < 3 {
			return nil, fmt.Errorf("proxyproto: v2: %d stray bytes after the TLVs, too few for a TLV header", len(p))
		}
		n := int(binary.BigEndian.Uint16(p[1:3]))
		if 3+n > len(p) {
			return nil, fmt.Errorf("proxyproto: v2: TLV type %#02x of length %d overruns the header by %d bytes", p[0], n, 3+n-len(p))
		}
		p = p[3+n:]
	}
	if count == 0 {
		return nil, nil
	}
	tlvs := make([]TLV, 0, count)
	crcAt := -1
	for p := hdr[off:]; len(p) > 0; {
		n := int(binary.BigEndian.Uint16(p[1:3]))
		t := TLV{Type: p[0], Value: p[3 : 3+n : 3+n]}
		if t.Type == TypeCRC32C {
			if n != 4 {
				return nil, fmt.Errorf("proxyproto: v2: CRC32C TLV of length %d, want 4", n)
			}
			if crcAt >= 0 {
				return nil, errors.New("proxyproto: v2: more than one CRC32C TLV")
			}
			crcAt = len(hdr) - len(p) + 3
		}
		tlvs = append(tlvs, t)
		p = p[3+n:]
	}
	if crcAt >= 0 {
		want := binary.BigEndian.Uint32(hdr[crcAt:])
		clear(hdr[crcAt : crcAt+4])
		got := crc32.Checksum(hdr, crcTable)
		binary.BigEndian.PutUint32(hdr[crcAt:], want)
		if got != want {
			return nil, fmt.Errorf("proxyproto: v2: CRC32C %#08x does not match the header's %#08x", want, got)
		}
	}
	return tlvs, nil
}
