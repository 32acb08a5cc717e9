package gtm

import (
	"fmt"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/logfile"
)

// queryLog is a name server's sampled query log (traffic.query_log): one
// query in every logs a line. Deciding costs one atomic add per query;
// only a sampled query is formatted.
type queryLog struct {
	*logfile.File
	every uint64
	n     atomic.Uint64
}

// SetQueryLog opens c's file (nil: no query log) and logs to it from now
// on; the file it replaces is closed. A reload calls it again, which
// reopens the path (logrotate).
func (s *Server) SetQueryLog(c *config.QueryLog) error {
	var ql *queryLog
	if c != nil {
		f, err := logfile.Open(c.Path)
		if err != nil {
			return fmt.Errorf("gtm: traffic.query_log: %w", err)
		}
		ql = &queryLog{File: f, every: uint64(max(c.Sample, 1))}
	}
	if old := s.qlog.Swap(ql); old != nil {
		old.Close()
	}
	return nil
}

// logQuery writes the line of an answered query when it is sampled:
// time, client, transport, name, type, response code, the answer's
// addresses or names, and tc when the answer was truncated.
func (s *Server) logQuery(m *dns.Msg, client netip.Addr, transport string) {
	ql := s.qlog.Load()
	if ql == nil || ql.n.Add(1)%ql.every != 0 {
		return
	}
	b := make([]byte, 0, 160)
	b = time.Now().UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z")
	b = append(b, ' ')
	if client.IsValid() {
		b = client.AppendTo(b)
	} else {
		b = append(b, '-')
	}
	b = append(b, ' ')
	b = append(b, transport...)
	name, qtype := "-", "-"
	if len(m.Question) > 0 {
		name, qtype = m.Question[0].Name, dns.TypeToString[m.Question[0].Qtype]
		if qtype == "" {
			qtype = "TYPE" + strconv.Itoa(int(m.Question[0].Qtype))
		}
	}
	b = append(b, ' ')
	b = appendPrintable(b, name)
	b = append(b, ' ')
	b = append(b, qtype...)
	b = append(b, ' ')
	if rc, ok := dns.RcodeToString[m.Rcode]; ok {
		b = append(b, rc...)
	} else {
		b = strconv.AppendInt(b, int64(m.Rcode), 10)
	}
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *dns.A:
			b = append(b, ' ')
			b = append(b, r.A.String()...)
		case *dns.AAAA:
			b = append(b, ' ')
			b = append(b, r.AAAA.String()...)
		case *dns.CNAME:
			b = append(b, ' ')
			b = appendPrintable(b, r.Target)
		}
	}
	if m.Truncated {
		b = append(b, " tc"...)
	}
	ql.Write(append(b, '\n'))
}

// appendPrintable writes a name as a line can hold it: a byte outside
// printable ASCII (a query may carry any) as \DDD, as DNS's own text form
// does.
func appendPrintable(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c > ' ' && c < 0x7f {
			b = append(b, c)
			continue
		}
		b = append(b, '\\', '0'+c/100, '0'+c/10%10, '0'+c%10)
	}
	return b
}
