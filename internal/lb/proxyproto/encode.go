package proxyproto

import (
	"encoding/binary"
	"hash/crc32"
	"net/netip"
	"strconv"
)

// AppendV1 appends h as a version 1 (text) header to b, for example
// "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n". A Local header, or a
// Proxy header with unset addresses, is written "PROXY UNKNOWN\r\n". IPv6
// addresses are written in RFC 5952 form, IPv4-mapped ones in hexadecimal
// ("::ffff:c000:201"), without zones. It returns an error, and b unchanged,
// if h has TLVs, an unknown command, or addresses that do not pair up.
func (h *Header) AppendV1(b []byte) ([]byte, error) {
	if len(h.TLVs) > 0 {
		return b, errV1TLV
	}
	fam, err := h.family()
	if err != nil {
		return b, err
	}
	switch fam {
	case famUnspec:
		return append(b, "PROXY UNKNOWN\r\n"...), nil
	case famTCP4:
		b = append(b, "PROXY TCP4 "...)
	default:
		b = append(b, "PROXY TCP6 "...)
	}
	b = appendAddrV1(b, h.Source.Addr())
	b = append(b, ' ')
	b = appendAddrV1(b, h.Destination.Addr())
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(h.Source.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(h.Destination.Port()), 10)
	return append(b, '\r', '\n'), nil
}

// appendAddrV1 writes a without zone, and an IPv4-mapped IPv6 address in
// hexadecimal groups (the specification's IPv6 syntax) rather than with the
// dotted tail netip uses.
func appendAddrV1(b []byte, a netip.Addr) []byte {
	a = a.WithZone("")
	if !a.Is4In6() {
		return a.AppendTo(b)
	}
	v4 := a.Unmap().As4()
	b = append(b, "::ffff:"...)
	b = strconv.AppendUint(b, uint64(v4[0])<<8|uint64(v4[1]), 16)
	b = append(b, ':')
	return strconv.AppendUint(b, uint64(v4[2])<<8|uint64(v4[3]), 16)
}

// AppendV2 appends h as a version 2 (binary) header to b. A Local header, or
// a Proxy header with unset addresses, has the UNSPEC family and no address
// block; TLVs follow in order. If h has a TypeCRC32C TLV (its value must be
// 4 bytes; what it holds is ignored), AppendV2 writes the header's checksum
// into it. It returns an error, and b unchanged, if h has an unknown command,
// addresses that do not pair up, or more than 65535 bytes of addresses and
// TLVs.
func (h *Header) AppendV2(b []byte) ([]byte, error) {
	fam, err := h.family()
	if err != nil {
		return b, err
	}
	n := addrLen(fam)
	crc := false
	for _, t := range h.TLVs {
		n += 3 + len(t.Value)
		if n > maxV2Block {
			return b, errTooLong
		}
		if t.Type == TypeCRC32C {
			if len(t.Value) != 4 {
				return b, errCRCLen
			}
			if crc {
				return b, errCRCTwice
			}
			crc = true
		}
	}
	cmd := Local
	if h.Command == Proxy {
		cmd = Proxy
	}
	start := len(b)
	b = append(b, signature...)
	b = append(b, 0x20|byte(cmd), fam, byte(n>>8), byte(n))
	switch fam {
	case famTCP4:
		s, d := h.Source.Addr().As4(), h.Destination.Addr().As4()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	case famTCP6:
		s, d := h.Source.Addr().As16(), h.Destination.Addr().As16()
		b = append(b, s[:]...)
		b = append(b, d[:]...)
	}
	if fam != famUnspec {
		b = binary.BigEndian.AppendUint16(b, h.Source.Port())
		b = binary.BigEndian.AppendUint16(b, h.Destination.Port())
	}
	crcAt := -1
	for _, t := range h.TLVs {
		b = append(b, t.Type, byte(len(t.Value)>>8), byte(len(t.Value)))
		if t.Type == TypeCRC32C {
			crcAt = len(b)
			b = append(b, 0, 0, 0, 0)
			continue
		}
		b = append(b, t.Value...)
	}
	if crcAt >= 0 {
		binary.BigEndian.PutUint32(b[crcAt:], crc32.Checksum(b[start:], crcTable))
	}
	return b, nil
}

// addrLen is the length of the v2 address block of a family byte, or -1 if
// the byte is not one the specification defines.
func addrLen(fam byte) int {
	switch fam {
	case famUnspec:
		return 0
	case famTCP4, famUDP4:
		return 12
	case famTCP6, famUDP6:
		return 36
	case famUnixStrm, famUnixDgram:
		return 216
	}
	return -1
}
