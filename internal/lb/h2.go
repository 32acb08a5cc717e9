package lb

// x/net/http2 deprecates its Server for net/http's, which serves HTTP/2 only
// on the connections that its own Server.Serve accepts. The balancer accepts
// and handshakes every connection itself, on the listener it shares with the
// HTTP/1.1 fast path, and hands over those that negotiated h2:
// http2.Server.ServeConn is the API for one such connection. Moving off it
// means feeding an http.Server a listener of handed-over connections.
//
//lint:file-ignore SA1019 ServeConn serves a connection the balancer accepted itself (see above)

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/haven-ha/haven/internal/lb/balance"
)

// HTTP/2 clients (negotiated by ALPN on a TLS listener) are served by
// x/net/http2 and forwarded over HTTP/1.1 with net/http's transport: the same
// backend choice, sticky sessions, retries and passive health as the
// HTTP/1.1 fast path, without its zero-allocation hot path.

// h2Servers serve a balancer's HTTP/2 connections. The http.Server is never
// started: it is registered with the http2.Server only so that its Shutdown
// sends GOAWAY to every HTTP/2 connection on graceful shutdown.
type h2Servers struct {
	h2   *http2.Server
	base *http.Server
}

func newH2Servers(idle time.Duration) (*h2Servers, error) {
	s := &h2Servers{h2: &http2.Server{IdleTimeout: idle}, base: &http.Server{}}
	if err := http2.ConfigureServer(s.base, s.h2); err != nil {
		return nil, err
	}
	return s, nil
}

func (lb *Balancer) serveH2(tc *tls.Conn) {
	lb.h2.h2.ServeConn(tc, &http2.ServeConnOpts{BaseConfig: lb.h2.base, Handler: http.HandlerFunc(lb.serveH2Request)})
}

// transports holds one pooled HTTP/1.1 transport per backend for the
// HTTP/2 path.
var transports sync.Map // *backend -> *http.Transport

func (lb *Balancer) transport(b *backend, s *settings) *http.Transport {
	if t, ok := transports.Load(b); ok {
		return t.(*http.Transport)
	}
	t := &http.Transport{
		DialContext:           dialer(s.connectTimeout).DialContext,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       idleConnTimeout,
		ResponseHeaderTimeout: s.serverTimeout,
		DisableCompression:    true,
	}
	actual, _ := transports.LoadOrStore(b, t)
	return actual.(*http.Transport)
}

func (lb *Balancer) serveH2Request(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	s := lb.settings.Load()
	pk := picker{p: lb.pool.Load()}
	pk.init()
	var hash uint64
	clientIP := ""
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		hash = balance.HashAddr(ap.Addr().Unmap())
		clientIP = ap.Addr().Unmap().String()
	}
	sticky := ""
	if s.stickyCookie != "" {
		if c, err := r.Cookie(s.stickyCookie); err == nil {
			sticky = c.Value
		}
	}
	if s.maxBody > 0 && r.ContentLength > s.maxBody {
		lb.h2Error(w, 413, "request body too large")
		return
	}
	replayable := s.retriable([]byte(r.Method)) && (r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0)
	failStatus, failMsg := 503, "no backend available"
	for tries := 0; ; tries++ {
		b, _, err := lb.acquire(r.Context(), &pk, hash, sticky)
		if err != nil {
			if tries == 0 {
				failMsg = err.Error()
			}
			lb.h2Error(w, failStatus, failMsg)
			return
		}
		b.m.requests.Add(1)
		resp, err := lb.transport(b, s).RoundTrip(lb.outgoing(r, b, clientIP, s))
		if err != nil {
			lb.release(b)
			b.m.resets.Add(1)
			observeFailure(b, "h2 forward: "+err.Error())
			failStatus, failMsg = 502, "backend failed the request"
			if replayable && tries < s.retries {
				pk.tried = append(pk.tried, b)
				b.m.retries.Add(1)
				sticky = ""
				continue
			}
			lb.h2Error(w, failStatus, failMsg)
			return
		}
		lb.relayH2(w, resp, b, s, sticky)
		lb.release(b)
		lb.duration.Observe(time.Since(start).Seconds())
		return
	}
}

func (lb *Balancer) outgoing(r *http.Request, b *backend, clientIP string, s *settings) *http.Request {
	out := r.Clone(r.Context())
	out.URL.Scheme = "http"
	out.URL.Host = b.addr
	out.RequestURI = ""
	out.Host = r.Host
	removeHopHeaders(out.Header)
	if prior := out.Header.Values("X-Forwarded-For"); len(prior) > 0 && clientIP != "" {
		clientIP = strings.Join(prior, ", ") + ", " + clientIP
	}
	out.Header.Set("X-Forwarded-For", clientIP)
	out.Header.Set("X-Forwarded-Proto", "https")
	if r.ContentLength == 0 {
		out.Body = nil
	}
	return out
}

func (lb *Balancer) relayH2(w http.ResponseWriter, resp *http.Response, b *backend, s *settings, sticky string) {
	defer resp.Body.Close()
	b.m.responses[statusClass(resp.StatusCode)].Add(1)
	if resp.StatusCode >= 500 {
		observeFailure(b, "status "+resp.Status)
	} else if b.mon != nil {
		b.mon.ObserveSuccess()
	}
	removeHopHeaders(resp.Header)
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	if s.stickyCookie != "" && sticky != b.cookie {
		h.Add("Set-Cookie", s.stickyCookie+"="+b.cookie+"; Path=/; HttpOnly; Secure")
	}
	w.WriteHeader(resp.StatusCode)
	n, _ := io.Copy(w, resp.Body)
	b.m.bytesIn.Add(uint64(n))
}

func removeHopHeaders(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, t := range strings.Split(f, ",") {
			h.Del(strings.TrimSpace(t))
		}
	}
	for _, k := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		h.Del(k)
	}
}

func (lb *Balancer) h2Error(w http.ResponseWriter, status int, msg string) {
	lb.countLocal(status)
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, "haven: "+msg, status)
}
