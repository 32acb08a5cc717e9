package lb

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/config"
)

// namedEcho is a TCP server that answers each line with its name and the
// line, until the client closes.
func namedEcho(t *testing.T, name string) string {
	t.Helper()
	return namedEchoAt(t, name, "127.0.0.1:0")
}

// namedEchoAt is namedEcho listening on addr.
func namedEchoAt(t *testing.T, name, addr string) string {
	t.Helper()
	return tcpBackendAt(t, addr, func(c net.Conn) {
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			if _, err := io.WriteString(c, name+" "+sc.Text()+"\n"); err != nil {
				return
			}
		}
	})
}

// ask sends a line over c and returns the answer, or the error.
func ask(c net.Conn, line string) (string, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	s, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(s), err
}

// SetBackends moves new connections to the new backends; with
// shutdown_sessions the connections to a backend that left are closed (a
// database client must not keep writing to a former primary), without it
// they stay.
func TestSetBackendsShutdownSessions(t *testing.T) {
	a, b := namedEcho(t, "a"), namedEcho(t, "b")
	for _, shutdown := range []bool{true, false} {
		body := "    mode: tcp\n    passive: {consecutive_failures: 0}\n"
		if shutdown {
			body += "    shutdown_sessions: true\n"
		}
		lb := startLB(t, body, "", a)
		old, err := net.Dial("tcp", lb.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer old.Close()
		if got, err := ask(old, "1"); got != "a 1" {
			t.Fatalf("before the change: %q, %v; want a's answer", got, err)
		}
		if err := lb.SetBackends([]*config.Backend{{Name: "b", Address: b, Weight: new(1)}}); err != nil {
			t.Fatal(err)
		}
		got, err := ask(old, "2")
		switch {
		case shutdown && err == nil:
			t.Errorf("shutdown_sessions: the connection to the removed backend still answers %q", got)
		case !shutdown && got != "a 2":
			t.Errorf("without shutdown_sessions the connection to the removed backend broke: %q, %v", got, err)
		}
		c, err := net.Dial("tcp", lb.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ask(c, "3"); got != "b 3" {
			t.Errorf("a new connection after the change: %q, %v; want b's answer", got, err)
		}
		c.Close()
		if st := lb.Status(); len(st.Backends) != 1 || st.Backends[0].Name != "b" {
			t.Errorf("status after SetBackends: %+v", st.Backends)
		}
	}
}
