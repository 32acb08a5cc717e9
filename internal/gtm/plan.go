package gtm

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/haven-ha/haven/internal/config"
)

// plan is what haven.yaml's traffic section asks of a node.
type plan struct {
	zone   Zone
	checks []pending
	delays map[string][2]time.Duration // by name: failover, failback
	tsig   map[string]string
	geoip  string
	listen string
	// queryLog is traffic.query_log (nil: off).
	queryLog *config.QueryLog
}

// pending is a target to check, before its monitor exists.
type pending struct {
	rel, target string
	check       *config.Check // nil: not checked
	addr        string        // the target's address, or its CNAME's name
	follows     *config.Follows
}

// planFrom reads the traffic section.
func planFrom(cfg *config.Config) (plan, error) {
	t := cfg.Traffic
	if t == nil {
		return plan{}, fmt.Errorf("gtm: haven.yaml has no traffic section: add one (docs/traffic.md)")
	}
	p := plan{zone: Zone{Origin: t.Zone, Names: map[string]Name{}}, delays: map[string][2]time.Duration{}, geoip: t.GeoIP, listen: t.Listen, queryLog: t.QueryLog}
	if p.listen == "" {
		p.listen = DefaultListen
	}
	for _, n := range t.Nameservers {
		nd, ok := cfg.Node(n)
		if !ok {
			return p, fmt.Errorf("gtm: name server %s is not a node", n)
		}
		addr, err := netip.ParseAddr(nd.Address)
		if err != nil {
			return p, fmt.Errorf("gtm: name server %s: address %q: %w", n, nd.Address, err)
		}
		p.zone.Nameservers = append(p.zone.Nameservers, Nameserver{Name: n, Addr: addr})
	}
	for rel, rec := range t.Records {
		n := Name{Policy: Policy(rec.Policy), TTL: rec.TTL.D(), AllDown: AllDown(rec.AllDown)}
		if rec.MaxAnswers != nil {
			n.MaxAnswers = *rec.MaxAnswers
		}
		for i, b := range rec.Backup {
			tg := Target{Name: fmt.Sprint("backup", i)}
			if a, err := netip.ParseAddr(b); err == nil {
				tg.Addr = a
			} else {
				tg.CNAME = b
			}
			n.Backups = append(n.Backups, tg)
		}
		p.delays[rel] = [2]time.Duration{rec.FailoverDelay.D(), rec.FailbackDelay.D()}
		for _, tg := range rec.Targets {
			target, probeAt, err := targetFrom(rel, tg)
			if err != nil {
				return p, err
			}
			n.Targets = append(n.Targets, target)
			var ch *config.Check
			if tg.Check != "" {
				var ok bool
				if ch, ok = cfg.Check(tg.Check); !ok {
					return p, fmt.Errorf("gtm: %s target %s: no check %q", rel, tg.Name, tg.Check)
				}
			}
			var follows *config.Follows
			if tg.Follows != nil {
				f := *tg.Follows // a copy: the caller's config may change under a reload
				follows = &f
			}
			p.checks = append(p.checks, pending{rel, tg.Name, ch, probeAt, follows})
		}
		p.zone.Names[rel] = n
	}
	if k := t.TSIG; k != nil {
		b, err := os.ReadFile(k.SecretFile)
		if err != nil {
			return p, fmt.Errorf("gtm: traffic.tsig.secret_file: %w", err)
		}
		p.tsig = map[string]string{dns.CanonicalName(k.Name): strings.TrimSpace(string(b))}
	}
	return p, nil
}

// targetFrom is one configured target, and where its check probes it.
func targetFrom(rel string, tg *config.Target) (Target, string, error) {
	target := Target{Name: tg.Name, CNAME: tg.CNAME, Weight: tg.Weight, Countries: tg.Countries, Continents: tg.Continents}
	probeAt := strings.TrimSuffix(tg.CNAME, ".")
	if tg.CNAME == "" {
		addr, err := netip.ParseAddr(tg.Address)
		if err != nil {
			return target, "", fmt.Errorf("gtm: %s target %s: %w", rel, tg.Name, err)
		}
		target.Addr, probeAt = addr, addr.String()
	}
	for _, sn := range tg.Subnets {
		pfx, err := netip.ParsePrefix(sn)
		if err != nil {
			return target, "", fmt.Errorf("gtm: %s target %s: subnet %q: %w", rel, tg.Name, sn, err)
		}
		target.Subnets = append(target.Subnets, pfx.Masked())
	}
	return target, probeAt, nil
}
