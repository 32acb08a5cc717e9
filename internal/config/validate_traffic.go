package config

import (
	"encoding/base64"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Valid values of the traffic section's enumerated keys.
var (
	recordPolicies = []string{"failover", "weighted", "hashed", "all", "cidr", "geo"}
	allDownModes   = []string{"open", "closed", "backup"}
	continents     = []string{"AF", "AN", "AS", "EU", "NA", "OC", "SA"}
)

func (v *validator) traffic() {
	t := v.cfg.Traffic
	if t == nil {
		return
	}
	if t.Zone == "" {
		v.errorf("traffic.zone", "required: the DNS zone delegated to haven, such as zone: gslb.shop.example.")
	} else if !isDomain(t.Zone) {
		v.errorf("traffic.zone", "%q is not a domain name", t.Zone)
	}
	v.nodeRefs("traffic.nameservers", t.Nameservers, "the nodes that answer DNS, such as nameservers: [lb1, lb2]")
	if t.Listen != "" {
		if _, _, err := splitListen(t.Listen); err != nil {
			v.errorf("traffic.listen", "%q is not a listen address: %v", t.Listen, err)
		}
	}
	for _, name := range sortedKeys(t.Records) {
		v.record(t.Records[name], "traffic.records."+name)
	}
	if t.GeoIP != "" {
		if _, err := os.Stat(t.GeoIP); err != nil {
			v.errorf("traffic.geoip", "%q cannot be read: %v", t.GeoIP, errors.Unwrap(err))
		}
	}
	if l := t.QueryLog; l != nil {
		switch {
		case l.Path == "":
			v.errorf("traffic.query_log.path", "required: the file to append to, such as /var/log/haven/dns.log, or - for the agent's standard output")
		case l.Path != "-" && !filepath.IsAbs(l.Path):
			v.errorf("traffic.query_log.path", "%q is not an absolute path (or - for the agent's standard output)", l.Path)
		}
		if l.Sample < 1 {
			v.errorf("traffic.query_log.sample", "%d: give 1 (every query) or more (one query in that many)", l.Sample)
		}
	}
	if k := t.TSIG; k != nil {
		if !isDomain(k.Name) {
			v.errorf("traffic.tsig.name", "%q is not a key name: use a domain name, such as xfr.%s", k.Name, t.Zone)
		}
		if k.SecretFile == "" {
			v.errorf("traffic.tsig.secret_file", "required: the file holding the key's base64 secret (openssl rand -base64 32 > tsig.secret)")
		} else if b, err := os.ReadFile(k.SecretFile); err != nil {
			v.errorf("traffic.tsig.secret_file", "%q cannot be read: %v", k.SecretFile, errors.Unwrap(err))
		} else if sec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b))); err != nil || len(sec) < 16 {
			v.errorf("traffic.tsig.secret_file", "%s does not hold a base64 secret of at least 16 bytes (openssl rand -base64 32)", k.SecretFile)
		}
	}
}

// targetAnswer checks that a target is an address or a CNAME.
func (v *validator) targetAnswer(tg *Target, path, policy string) {
	switch {
	case tg.Address != "" && tg.CNAME != "":
		v.errorf(path, "give address or cname, not both")
	case tg.CNAME != "":
		if !isDomain(tg.CNAME) {
			v.errorf(path+".cname", "%q is not a domain name", tg.CNAME)
		}
		if policy == "all" {
			v.errorf(path+".cname", "policy all answers every healthy target together, and a CNAME cannot share its name with other records: use failover or weighted")
		}
	default:
		if _, err := netip.ParseAddr(tg.Address); err != nil {
			v.errorf(path+".address", "%q is not an IP address (IPv4 or IPv6); for a name, use cname", tg.Address)
		}
	}
}

// follows checks the haven state a target follows.
func (v *validator) follows(tg *Target, path string) {
	f, path := tg.Follows, path+".follows"
	set := 0
	for _, given := range []bool{f.Balancer != "", f.VIP != "", f.Database} {
		if given {
			set++
		}
	}
	switch {
	case set != 1:
		v.errorf(path, "give exactly one of balancer, vip or database, such as follows: {balancer: web, region: east}")
	case tg.Check != "":
		v.errorf(path, "a target takes its health from a check or from follows, not both")
	case v.cfg.Coordination == nil:
		v.errorf(path, "follows reads haven's state from etcd: it needs the coordination section")
	case f.Balancer != "" && v.cfg.Balancers[f.Balancer] == nil:
		v.errorf(path+".balancer", "%s", undefined("balancer", f.Balancer, sortedKeys(v.cfg.Balancers)))
	case f.VIP != "" && (v.cfg.Balancers[f.VIP] == nil || v.cfg.Balancers[f.VIP].VIP == nil):
		v.errorf(path+".vip", "%q is not a balancer with a vip section", f.VIP)
	case f.Database && v.cfg.Database == nil:
		v.errorf(path+".database", "there is no database section to follow: add one, or follow a balancer or a vip")
	}
	if f.Region != "" && v.cfg.Regions[f.Region] == nil {
		v.errorf(path+".region", "%s", undefined("region", f.Region, sortedKeys(v.cfg.Regions)))
	}
}

// geoTarget checks a target's countries and continents.
func (v *validator) geoTarget(tg *Target, path, policy string) {
	for j, c := range tg.Countries {
		if len(c) != 2 || strings.ToUpper(c) != c || strings.ToLower(c) == c {
			v.errorf(index(path+".countries", j), "%q is not an ISO 3166-1 country code such as DE or US", c)
		}
	}
	for j, c := range tg.Continents {
		if !slices.Contains(continents, c) {
			v.errorf(index(path+".continents", j), "%s", notOneOf(c, continents...))
		}
	}
	if len(tg.Countries)+len(tg.Continents) > 0 && policy != "geo" {
		v.errorf(path, "countries and continents only apply to the geo policy (this record's is %s)", policy)
	}
}

// allDown checks what a record answers with no healthy target.
func (v *validator) allDown(rec *Record, path string) {
	if !slices.Contains(allDownModes, rec.AllDown) {
		v.errorf(path+".all_down", "%s", notOneOf(rec.AllDown, allDownModes...))
	}
	switch {
	case rec.AllDown == "backup" && len(rec.Backup) == 0:
		v.errorf(path+".backup", "required by all_down: backup: the answers when every target is down, such as backup: [198.18.9.1]")
	case rec.AllDown != "backup" && len(rec.Backup) > 0:
		v.errorf(path+".backup", "only answers under all_down: backup (this record's is %s)", rec.AllDown)
	}
	names := 0
	for i, b := range rec.Backup {
		if _, err := netip.ParseAddr(b); err == nil {
			continue
		}
		names++
		if !isDomain(b) {
			v.errorf(index(path+".backup", i), "%q is neither an IP address nor a domain name", b)
		}
	}
	if names > 0 && len(rec.Backup) > 1 {
		v.errorf(path+".backup", "the backup answer is every entry together, and a CNAME cannot share its name: give one domain name or only addresses")
	}
	if rec.MaxAnswers != nil {
		switch {
		case *rec.MaxAnswers < 0:
			v.errorf(path+".max_answers", "%d is negative", *rec.MaxAnswers)
		case rec.Policy != "all":
			v.errorf(path+".max_answers", "only applies to the all policy (this record's is %s)", rec.Policy)
		}
	}
}

func (v *validator) record(rec *Record, path string) {
	v.allDown(rec, path)
	switch {
	case !slices.Contains(recordPolicies, rec.Policy):
		v.errorf(path+".policy", "%s", notOneOf(rec.Policy, recordPolicies...))
	case rec.Policy == "geo" && v.cfg.Traffic.GeoIP == "":
		v.errorf(path+".policy", "geo locates clients in a MaxMind-format database: set traffic.geoip to its file (such as GeoLite2-Country.mmdb)")
	}
	if rec.Policy == "geo" && !slices.ContainsFunc(rec.Targets, func(tg *Target) bool { return tg != nil && len(tg.Countries)+len(tg.Continents) > 0 }) {
		v.errorf(path+".policy", "geo needs countries or continents on at least one target, such as countries: [DE, FR]")
	}
	if len(rec.Targets) == 0 {
		v.errorf(path+".targets", "required: at least one target, such as targets: [{name: east, address: 198.18.1.100}]")
	}
	if rec.Policy == "cidr" && !slices.ContainsFunc(rec.Targets, func(tg *Target) bool { return tg != nil && len(tg.Subnets) > 0 }) {
		v.errorf(path+".policy", "cidr needs subnets on at least one target, such as subnets: [10.0.0.0/8]")
	}
	names := map[string]bool{}
	for i, tg := range rec.Targets {
		tpath := index(path+".targets", i)
		switch {
		case tg.Name == "":
			v.errorf(tpath+".name", "required: a name for this answer, such as name: east")
		case names[tg.Name]:
			v.errorf(tpath+".name", "%q is already the name of another target", tg.Name)
		}
		names[tg.Name] = true
		v.targetAnswer(tg, tpath, rec.Policy)
		if tg.Follows != nil {
			v.follows(tg, tpath)
		}
		if tg.Check != "" {
			v.checkRef(tpath+".check", tg.Check)
			if ch := v.cfg.Checks[tg.Check]; ch != nil && ch.ICMP != nil && tg.CNAME != "" {
				v.errorf(tpath+".check", "check %s pings, and a cname target has no address to ping: use a tcp or http check", tg.Check)
			}
			if ch := v.cfg.Checks[tg.Check]; ch != nil && ch.TCP != nil && ch.TCP.Port == 0 {
				v.errorf(tpath+".check", "check %s probes TCP without a port, and a target is only an address: set checks.%s.tcp.port", tg.Check, tg.Check)
			}
		}
		if tg.Weight < 0 {
			v.errorf(tpath+".weight", "%d is negative", tg.Weight)
		}
		for j, sn := range tg.Subnets {
			spath := index(tpath+".subnets", j)
			pfx, err := netip.ParsePrefix(sn)
			switch {
			case err != nil:
				v.errorf(spath, "%q is not a subnet such as 10.0.0.0/8", sn)
			case pfx.Masked() != pfx:
				v.errorf(spath, "%q has host bits set: write %s", sn, pfx.Masked())
			}
		}
		if len(tg.Subnets) > 0 && rec.Policy != "cidr" {
			v.errorf(tpath+".subnets", "only applies to the cidr policy (this record's is %s)", rec.Policy)
		}
		v.geoTarget(tg, tpath, rec.Policy)
	}
}
