package config

import (
	"strings"
	"time"
)

// KernelRTOMin is Linux's own minimum retransmission timeout: with
// coordination.rto_min at this value haven installs no peer routes.
const KernelRTOMin = 200 * time.Millisecond

// endpointSchemes are the schemes of an external etcd's endpoints.
var endpointSchemes = []string{"http", "https"}

func (v *validator) coordination() {
	c := v.cfg.Coordination
	if c == nil {
		return
	}
	for _, key := range []string{"client_port", "peer_port"} {
		p := c.ClientPort
		if key == "peer_port" {
			p = c.PeerPort
		}
		if p < 1 || p > 65535 {
			v.errorf("coordination."+key, "%d is not a port between 1 and 65535", p)
		}
	}
	if c.ClientPort == c.PeerPort {
		v.errorf("coordination.peer_port", "%d is also the client port: etcd needs two ports", c.PeerPort)
	}
	if hb, et := c.Heartbeat.D(), c.ElectionTimeout.D(); et < 5*hb {
		v.errorf("coordination.election_timeout", "%s is less than 5 heartbeats (%s): etcd would hold elections while the leader is healthy", c.ElectionTimeout, Duration(5*hb))
	}
	if d := c.RTOMin.D(); d < 5*time.Millisecond || d > KernelRTOMin || d%time.Millisecond != 0 {
		v.errorf("coordination.rto_min", "%s is not a whole number of milliseconds from 5ms to %s (the kernel's own floor, which leaves the routes alone)", c.RTOMin, Duration(KernelRTOMin))
	}
	if t := c.TLS; t != nil {
		for key, f := range map[string]string{"ca": t.CA, "cert": t.Cert, "key": t.Key} {
			if f == "" {
				v.errorf("coordination.tls."+key, "required: a PEM file; `haven certs` makes them")
			} else if !strings.Contains(f, "{node}") {
				v.readable("coordination.tls."+key, f)
			}
		}
	}
	switch {
	case len(c.Members) > 0 && len(c.Endpoints) > 0:
		v.errorf("coordination.endpoints", "give members (embedded etcd) or endpoints (external etcd), not both")
	case len(c.Endpoints) > 0:
		for i, e := range c.Endpoints {
			v.url(index("coordination.endpoints", i), e, endpointSchemes)
		}
	default:
		v.nodeRefs("coordination.members", c.Members, "the nodes that run embedded etcd, such as members: [db1, db2, db3], or endpoints")
		v.zones("coordination.members", c.Members)
	}
}
