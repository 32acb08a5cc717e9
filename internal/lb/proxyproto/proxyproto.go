// Package proxyproto encodes and decodes the PROXY protocol, versions 1 (text)
// and 2 (binary), as specified by HAProxy
// (https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt).
//
// A balancer sends a header to a backend ahead of the client's bytes so that
// the backend learns the client's address (HeaderFor, then AppendV1 or
// AppendV2); a listener behind another proxy reads one (Read). The encoders
// append to a caller's buffer without allocating. Read is strict: it accepts
// exactly the syntax of the specification, bounds every length, says what is
// wrong when it refuses a header, and never consumes a byte past the header.
//
// Only TCP over IPv4 and IPv6 is carried. A version 2 header for another
// transport (UDP, UNIX sockets, or unspecified) is read as a PROXY command
// with unset addresses, as the specification allows ("fall back to the UNSPEC
// mode"); the receiver then uses the connection's own addresses.
package proxyproto

import (
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"net/netip"
)

// Command is the command of a header.
type Command byte

const (
	// Local means the proxy opened the connection itself (a health check, for
	// example): the receiver uses the connection's real endpoints. Version 1
	// spells it "PROXY UNKNOWN".
	Local Command = 0x0
	// Proxy means the connection is relayed on behalf of the client whose
	// addresses the header carries.
	Proxy Command = 0x1
)

// String returns "LOCAL", "PROXY", or the command's number.
func (c Command) String() string {
	switch c {
	case Local:
		return "LOCAL"
	case Proxy:
		return "PROXY"
	}
	return fmt.Sprintf("Command(%d)", byte(c))
}

// Header is a decoded PROXY protocol header.
//
// Source and Destination are the client's address and the address it
// connected to. They are both set (both IPv4, or both IPv6, where an
// IPv4-mapped IPv6 address counts as IPv6) for a Proxy command over TCP, and
// both unset when the addresses are unspecified (v1 UNKNOWN, v2 UNSPEC or an
// unsupported transport); the encoders ignore them for Local.
type Header struct {
	// Version is 1 or 2: the version Read decoded, or the one HeaderFor was
	// asked for. The encoders do not look at it.
	Version int
	// Command is Local or Proxy.
	Command Command
	// Source is the client's address and port.
	Source netip.AddrPort
	// Destination is the address and port the client connected to.
	Destination netip.AddrPort
	// TLVs are the version 2 type-length-value extensions, in wire order.
	// Version 1 carries none.
	TLVs []TLV
}

// TLV is one type-length-value extension of a version 2 header.
type TLV struct {
	// Type is the extension's type, such as TypeAuthority.
	Type byte
	// Value is the extension's value, at most 65535 bytes. Read returns
	// values that share one buffer; they are not to be appended to.
	Value []byte
}

// Registered TLV types (section 2.2 of the specification).
const (
	// TypeALPN carries the negotiated application protocol, as in TLS ALPN.
	TypeALPN byte = 0x01
	// TypeAuthority carries the host name the client asked for (TLS SNI).
	TypeAuthority byte = 0x02
	// TypeCRC32C carries a CRC-32C of the whole header. AppendV2 computes it
	// and Read verifies it.
	TypeCRC32C byte = 0x03
	// TypeNoop is padding; its value is ignored.
	TypeNoop byte = 0x04
	// TypeUniqueID carries an opaque connection identifier of up to 128 bytes.
	TypeUniqueID byte = 0x05
	// TypeSSL carries TLS details of the client connection, with sub-TLVs.
	TypeSSL byte = 0x20
	// TypeNetNS carries the name of a network namespace.
	TypeNetNS byte = 0x30
)

// signature starts every version 2 header.
const signature = "\r\n\r\n\x00\r\nQUIT\n"

const (
	maxV1Len   = 107   // longest v1 line, CRLF included (section 2.1)
	v2HeadLen  = 16    // signature, version/command, family, length
	maxV2Block = 65535 // largest v2 address and TLV block
)

// Address families and transports of the v2 family byte (high and low nibble).
const (
	famUnspec    = 0x00
	famTCP4      = 0x11
	famUDP4      = 0x12
	famTCP6      = 0x21
	famUDP6      = 0x22
	famUnixStrm  = 0x31
	famUnixDgram = 0x32
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// HeaderFor returns the header that presents a client connection to a
// backend: client is the connection's RemoteAddr and local its LocalAddr.
// IPv4-mapped IPv6 addresses (a dual-stack listener's view of IPv4 clients)
// are unmapped, and zones dropped. If either address is not a TCP address
// (a UNIX socket listener, say), the header has the Local command, as HAProxy
// sends. version must be 1 or 2.
func HeaderFor(client, local net.Addr, version int) (*Header, error) {
	if version != 1 && version != 2 {
		return nil, fmt.Errorf("proxyproto: version %d is not 1 or 2", version)
	}
	h := &Header{Version: version, Command: Proxy}
	src, ok1 := tcpAddrPort(client)
	dst, ok2 := tcpAddrPort(local)
	if !ok1 || !ok2 {
		h.Command = Local
		return h, nil
	}
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	if sa.Is4() != da.Is4() {
		// One side is IPv6 proper: present both as IPv6.
		sa, da = netip.AddrFrom16(sa.As16()), netip.AddrFrom16(da.As16())
	}
	h.Source = netip.AddrPortFrom(sa, src.Port())
	h.Destination = netip.AddrPortFrom(da, dst.Port())
	return h, nil
}

// tcpAddrPort returns the address of a TCP endpoint without its zone.
func tcpAddrPort(a net.Addr) (netip.AddrPort, bool) {
	t, ok := a.(*net.TCPAddr)
	if !ok || t == nil {
		return netip.AddrPort{}, false
	}
	ap := t.AddrPort()
	if !ap.Addr().IsValid() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().WithZone(""), ap.Port()), true
}

// Errors the encoders return; they do not allocate.
var (
	errBadCommand = errors.New("proxyproto: command is neither LOCAL nor PROXY")
	errOneAddr    = errors.New("proxyproto: source and destination must both be set or both be unset")
	errFamilies   = errors.New("proxyproto: source and destination are of different address families")
	errV1TLV      = errors.New("proxyproto: v1 cannot carry TLVs")
	errTooLong    = errors.New("proxyproto: v2 address and TLV block longer than 65535 bytes")
	errCRCLen     = errors.New("proxyproto: CRC32C TLV value must be 4 bytes")
	errCRCTwice   = errors.New("proxyproto: more than one CRC32C TLV")
)

// family validates h's command and addresses and returns the v2 family byte
// they encode to: UNSPEC when there are no addresses to send.
func (h *Header) family() (fam byte, err error) {
	switch h.Command {
	case Local:
		return famUnspec, nil
	case Proxy:
	default:
		return 0, errBadCommand
	}
	s, d := h.Source.Addr(), h.Destination.Addr()
	switch {
	case !s.IsValid() && !d.IsValid():
		return famUnspec, nil
	case !s.IsValid() || !d.IsValid():
		return 0, errOneAddr
	case s.Is4() && d.Is4():
		return famTCP4, nil
	case s.Is6() && d.Is6():
		return famTCP6, nil
	}
	return 0, errFamilies
}
