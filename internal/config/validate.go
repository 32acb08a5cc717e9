package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// validator checks a decoded, defaulted Config. It reports through the
// report, so that every message points at the value it is about.
//
// This file holds the top-level keys and what several sections share
// (references to nodes and checks, zones, readable files, URLs); each
// section's checks are in validate_<section>.go, and listener collisions
// in listeners.go.
type validator struct {
	*report
	cfg       *Config
	nodes     map[string]*Node // first definition of each name
	nodeNames []string         // sorted
}

func validate(c *Config, r *report) {
	v := &validator{report: r, cfg: c, nodes: map[string]*Node{}}
	v.cluster()
	v.admin()
	v.regions()
	for _, name := range sortedKeys(c.Checks) {
		v.check(c.Checks[name], "checks."+name)
	}
	for _, name := range sortedKeys(c.Balancers) {
		v.balancer(c.Balancers[name], "balancers."+name)
	}
	v.coordination()
	v.database()
	v.traffic()
	v.objectives(c.Objectives)
	v.drills(c.Drills)
	v.volumes()
	v.listeners()
	v.adminAddresses()
}

func (v *validator) cluster() {
	switch {
	case v.cfg.Cluster == "":
		v.errorf("cluster", "required: name the cluster, such as cluster: shop")
	case !isName(v.cfg.Cluster):
		v.errorf("cluster", "%q %s", v.cfg.Cluster, badName)
	}
}

const badName = "is not a valid name: use up to 63 letters, digits, '-', '_' and '.'"

func (v *validator) admin() {
	if p := v.cfg.Admin.Port; p < 1 || p > 65535 {
		v.errorf("admin.port", "%d is not a port between 1 and 65535", p)
	}
	if f := v.cfg.Admin.TokenFile; f != "" {
		v.readable("admin.token_file", f)
	}
	if f := v.cfg.Admin.ReadTokenFile; f != "" {
		v.readable("admin.read_token_file", f)
	}
	if v.cfg.Admin.AuthenticateReads && v.cfg.Admin.TokenFile == "" && v.cfg.Admin.ReadTokenFile == "" {
		v.errorf("admin.authenticate_reads", "needs admin.token_file or admin.read_token_file: the token reads must present")
	}
	if t := v.cfg.Admin.TLS; t != nil {
		for _, key := range []string{"ca", "cert", "key"} {
			f := map[string]string{"ca": t.CA, "cert": t.Cert, "key": t.Key}[key]
			if f == "" {
				v.errorf("admin.tls."+key, "required: a PEM file; `haven certs` makes them")
			} else if !strings.Contains(f, "{node}") {
				v.readable("admin.tls."+key, f)
			}
		}
	}
}

// readable checks that file can be opened now, so that a missing or
// unreadable file fails `haven check` rather than the first handshake.
func (v *validator) readable(path, file string) {
	f, err := os.Open(file)
	if err == nil {
		var st fs.FileInfo
		st, err = f.Stat()
		f.Close()
		if err == nil && st.IsDir() {
			err = errors.New("is a directory")
		}
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		v.errorf(path, "%q cannot be read: %v", file, err)
	}
}

// nodeRefs checks a list of node names: not empty, no repeats, each defined.
func (v *validator) nodeRefs(path string, names []string, what string) {
	if len(names) == 0 {
		v.errorf(path, "required: %s", what)
		return
	}
	seen := map[string]bool{}
	for i, name := range names {
		ipath := index(path, i)
		if seen[name] {
			v.errorf(ipath, "%s is listed twice", name)
			continue
		}
		seen[name] = true
		if _, ok := v.nodes[name]; !ok {
			v.errorf(ipath, "%s", undefined("node", name, v.nodeNames))
		}
	}
}

func (v *validator) checkRef(path, name string) {
	if _, ok := v.cfg.Checks[name]; !ok {
		v.errorf(path, "%s", undefined("check", name, sortedKeys(v.cfg.Checks)))
	}
}

// undefined is the message for a reference to a name that is not defined.
func undefined(kind, name string, defined []string) string {
	if len(defined) == 0 {
		return fmt.Sprintf("%q is not a %s: no %ss are defined", name, kind, kind)
	}
	hint := ""
	if s := closest(name, defined); s != "" {
		hint = fmt.Sprintf(" (did you mean %s?)", s)
	}
	return fmt.Sprintf("%q is not a %s%s; %ss are %s", name, kind, hint, kind, strings.Join(defined, ", "))
}

// zones warns when members of a redundant group share a zone of a region:
// one zone failure would take them together. Members without a zone are
// left out, as nothing is known about where they are.
func (v *validator) zones(path string, members []string) {
	type place struct{ region, zone string }
	groups := map[place][]string{}
	var order []place
	for _, name := range members {
		n, ok := v.nodes[name]
		if !ok || n.Zone == "" || slices.Contains(groups[place{n.Region, n.Zone}], name) {
			continue
		}
		p := place{n.Region, n.Zone}
		if groups[p] == nil {
			order = append(order, p)
		}
		groups[p] = append(groups[p], name)
	}
	for _, p := range order {
		names := groups[p]
		switch {
		case len(names) == 2:
			v.warnf(path, "%s are both in zone %s of region %s; a zone failure takes both (spread them across zones)", andList(names), p.zone, p.region)
		case len(names) > 2:
			v.warnf(path, "%s are all in zone %s of region %s; a zone failure takes all of them (spread them across zones)", andList(names), p.zone, p.region)
		}
	}
}

// url checks a URL's scheme; the rest is left to the component that uses it.
func (v *validator) url(path, s string, schemes []string) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || rest == "" || !slices.Contains(schemes, scheme) {
		v.errorf(path, "%q is not a URL with scheme %s", s, strings.Join(schemes, " or "))
	}
}

// objectives checks the recovery objectives: an RTO is a time of more than
// 0 (no architecture recovers in none); an RPO may be 0, no loss at all
// (the decoder refuses negative durations).
func (v *validator) objectives(o *Objectives) {
	if o == nil {
		return
	}
	check := func(path string, rto *Duration) {
		if rto != nil && *rto == 0 {
			v.errorf(path+".rto", "%s: give the longest outage the service accepts, more than 0", *rto)
		}
	}
	check("objectives", o.RTO)
	for _, p := range []struct {
		part string
		own  *Objective
	}{{PartWeb, o.Web}, {PartDatabase, o.Database}, {PartRegion, o.Region}} {
		if p.own != nil {
			check("objectives."+p.part, p.own.RTO)
		}
	}
}

// minDrillEvery is the shortest interval between scheduled drills: each is
// an outage on purpose.
const minDrillEvery = 10 * time.Minute

// drills checks the drills section: faults that can last, schedules that
// name a scenario and leave the deployment time between two drills, and
// processes found one way.
func (v *validator) drills(d *Drills) {
	if d == nil {
		return
	}
	if d.MaxDuration < Duration(time.Second) {
		v.errorf("drills.max_duration", "%s is shorter than 1s: no fault could last", d.MaxDuration)
	}
	if d.URL != "" {
		v.url("drills.url", d.URL, []string{"http", "https"})
	}
	if d.DSNFile != "" {
		v.readable("drills.dsn_file", d.DSNFile)
	}
	for i, s := range d.Schedule {
		p := fmt.Sprintf("drills.schedule[%d]", i)
		switch {
		case s == nil || s.Scenario == "":
			v.errorf(p+".scenario", "required: name a built-in scenario (haven drill run -h lists them) or a scenario file")
			continue
		case s.Every < Duration(minDrillEvery):
			v.errorf(p+".every", "%s: give at least %s between two drills (each is an outage on purpose)", s.Every, Duration(minDrillEvery))
		case s.For > d.MaxDuration:
			v.errorf(p+".for", "%s is longer than drills.max_duration (%s)", s.For, d.MaxDuration)
		}
		if !d.Enabled {
			v.errorf(p, "scheduled drills inject faults: set drills.enabled: true")
		}
		if d.DSNFile == "" && d.URL == "" {
			v.errorf(p, "a drill needs a workload to judge: give drills.dsn_file, drills.url or both")
		}
	}
	for _, name := range sortedKeys(d.Processes) {
		p, path := d.Processes[name], "drills.processes."+name
		switch {
		case !isName(name):
			v.errorf(path, "%q %s", name, badName)
		case p == nil || (p.PIDFile == "") == (p.Unit == ""):
			v.errorf(path, "give one of pid_file (the process's pid file) and unit (its systemd unit)")
		case p.PIDFile != "" && !filepath.IsAbs(p.PIDFile):
			v.errorf(path+".pid_file", "%q: give an absolute path", p.PIDFile)
		}
	}
}
