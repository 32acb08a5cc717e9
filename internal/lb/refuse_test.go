package lb

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestRefusalIsReadBeforeClose: a request refused while the client is still
// sending (a URI too long, a body too large) is answered, and the answer
// reaches the client before an orderly close, not a reset that would make
// it discard the answer.
func TestRefusalIsReadBeforeClose(t *testing.T) {
	b := newCountingBackend(t, "b1", nil)
	lb := startLB(t, "    limits: {max_body_bytes: 1KiB}\n", "", b.addr())
	tests := []struct {
		name, raw, status string
	}{
		{"URI of 1 MB", "GET /" + strings.Repeat("a", 1<<20) + " HTTP/1.1\r\nHost: a\r\n\r\n", "414"},
		{"head of 1 MB", "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("a", 1<<20) + "\r\n\r\n", "431"},
		{"body of 1 MB", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n" + strings.Repeat("a", 1<<20), "413"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", lb.addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			c.SetDeadline(time.Now().Add(10 * time.Second))
			go io.WriteString(c, tt.raw) // haven answers before it has read it all
			got, err := io.ReadAll(c)
			if err != nil || !strings.HasPrefix(string(got), "HTTP/1.1 "+tt.status) {
				t.Errorf("got %.40q, %v; want a %s then an orderly close", got, err, tt.status)
			}
		})
	}
	if n := b.hits.Load(); n != 0 {
		t.Errorf("backend received %d refused requests", n)
	}
}
