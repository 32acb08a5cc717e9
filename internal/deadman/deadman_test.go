package deadman

import (
	"bytes"
	"testing"
	"time"
)

// The window element's key must be laid out as the rule's registers are:
// the key, zero padding to whole 32-bit registers, then the time in network
// byte order. The kernel tests (internal/vip, internal/pg) show the gates
// work; this shows the layout for a port, which needs the padding.
func TestWindowElementLayout(t *testing.T) {
	w := window{from: 0x0102030405060708, to: 0x1112131415161718}
	for _, tc := range []struct {
		name           string
		key            []byte
		wantKey, wantE []byte
	}{
		{"IPv4 address", []byte{198, 18, 1, 100},
			[]byte{198, 18, 1, 100, 1, 2, 3, 4, 5, 6, 7, 8},
			[]byte{198, 18, 1, 100, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18}},
		{"port 5432", []byte{0x15, 0x38},
			[]byte{0x15, 0x38, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8},
			[]byte{0x15, 0x38, 0, 0, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18}},
	} {
		e := w.element(tc.key)
		if !bytes.Equal(e.Key, tc.wantKey) || !bytes.Equal(e.KeyEnd, tc.wantE) {
			t.Errorf("%s: key % x, end % x; want % x, % x", tc.name, e.Key, e.KeyEnd, tc.wantKey, tc.wantE)
		}
		if e.Timeout < time.Duration(w.to-w.from) {
			t.Errorf("%s: element timeout %s ends before the window", tc.name, e.Timeout)
		}
	}
}
