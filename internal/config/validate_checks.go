package config

import (
	"regexp"
	"strings"
)

// probeKinds are a check's probes, exactly one of which is set.
var probeKinds = []string{"tcp", "http", "https", "icmp", "exec", "volume"}

func (v *validator) check(ch *Check, path string) {
	if !isName(ch.Name) {
		v.keyErrorf(path, "%q %s", ch.Name, badName)
	}
	set := ch.probeKinds()
	switch {
	case len(set) == 0:
		v.errorf(path, "no probe: want exactly one of %s", strings.Join(probeKinds, ", "))
	case len(set) > 1:
		all := "all"
		if len(set) == 2 {
			all = "both"
		}
		v.errorf(path+"."+set[1], "%s are %s set: want exactly one of %s", andList(set), all, strings.Join(probeKinds, ", "))
	}
	if ch.Rise < 1 {
		v.errorf(path+".rise", "%d is less than 1", ch.Rise)
	}
	if ch.Fall < 1 {
		v.errorf(path+".fall", "%d is less than 1", ch.Fall)
	}
	if ch.Timeout > ch.Interval {
		v.errorf(path+".timeout", "%s is longer than the interval %s: a probe must end before the next one starts", ch.Timeout, ch.Interval)
	}
	if j := *ch.Jitter; j < 0 || j >= 1 {
		v.errorf(path+".jitter", "%v is not a fraction from 0 up to (not including) 1", j)
	}
	if ch.TCP != nil {
		v.probePort(path+".tcp.port", ch.TCP.Port)
	}
	v.httpProbe(ch.HTTP, path+".http", false)
	v.httpProbe(ch.HTTPS, path+".https", true)
	if ch.Exec != nil && (len(ch.Exec.Command) == 0 || ch.Exec.Command[0] == "") {
		v.errorf(path+".exec.command", "required: the program and its arguments, such as command: [/usr/local/bin/check-app, --quick]")
	}
	v.volumeProbe(ch.Volume, path+".volume")
}

// probeKinds lists the probe kinds set on ch, in the order of probeKinds.
func (ch *Check) probeKinds() []string {
	var set []string
	for i, on := range []bool{ch.TCP != nil, ch.HTTP != nil, ch.HTTPS != nil, ch.ICMP != nil, ch.Exec != nil, ch.Volume != nil} {
		if on {
			set = append(set, probeKinds[i])
		}
	}
	return set
}

func (v *validator) probePort(path string, port int) {
	if v.given(path) && (port < 1 || port > 65535) {
		v.errorf(path, "%d is not a port between 1 and 65535 (leave it out to probe the target's own port)", port)
	}
}

func (v *validator) httpProbe(p *HTTPProbe, path string, https bool) {
	if p == nil {
		return
	}
	v.probePort(path+".port", p.Port)
	if !isToken(p.Method) {
		v.errorf(path+".method", "%q is not an HTTP method", p.Method)
	}
	if !strings.HasPrefix(p.Path, "/") {
		v.errorf(path+".path", "%q does not start with /", p.Path)
	}
	if p.ExpectStatus != nil && len(p.ExpectStatus) == 0 {
		// Consumers read nil as 200-399; an empty list would accept nothing.
		v.errorf(path+".expect_status", "an empty list accepts no status: leave the key out for any 200-399")
	}
	for i, code := range p.ExpectStatus {
		if code < 100 || code > 599 {
			v.errorf(index(path+".expect_status", i), "%d is not an HTTP status code (100-599)", code)
		}
	}
	if p.ExpectRegex != "" {
		if _, err := regexp.Compile(p.ExpectRegex); err != nil {
			v.errorf(path+".expect_regex", "%q does not compile: %v", p.ExpectRegex, err)
		}
	}
	if !https {
		for _, key := range []string{"tls_verify", "sni"} {
			if v.given(path + "." + key) {
				v.errorf(path+"."+key, "only applies to https probes")
			}
		}
	}
}
