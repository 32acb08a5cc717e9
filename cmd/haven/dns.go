package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"
)

const dnsUsage = `usage: haven dns ACTION [NAME TARGET] [flags]

actions:
  drain NAME TARGET [--for D]   take TARGET out of NAME's answers on every name server (default for 1h)
  enable NAME TARGET            end the drain
  status                        what every managed name answers now, as each name server says

flags:
`

// runDNS drives the traffic managers of traffic.nameservers.
func runDNS(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dns", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, dnsUsage); fs.PrintDefaults() }
	cfgPath := fs.String("c", "haven.yaml", "configuration file")
	dur := fs.Duration("for", time.Hour, "drain: how long the target stays out")
	pos, err := parseInterleaved(fs, args)
	if err != nil || len(pos) == 0 {
		fs.Usage()
		return errUsage
	}
	ac, err := newAdminClient(*cfgPath)
	if err != nil {
		return err
	}
	t := ac.cfg.Traffic
	if t == nil {
		return errors.New("haven.yaml has no traffic section")
	}
	switch action := pos[0]; {
	case action == "status" && len(pos) == 1:
		trafficStatus(ac, t.Nameservers, "", stdout)
		return nil
	case (action == "drain" || action == "enable") && len(pos) == 3:
		name, target := pos[1], pos[2]
		if rec := t.Records[name]; rec == nil {
			return fmt.Errorf("traffic.records has no name %q", name)
		}
		path := "/api/v1/traffic/" + url.PathEscape(name) + "/" + url.PathEscape(target) + "/" + action
		if action == "drain" {
			path += "?for=" + url.QueryEscape(dur.String())
		}
		// Every name server answers for the zone: each must drain.
		var errs []error
		for _, n := range t.Nameservers {
			if err := ac.do("POST", n, path, nil); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n, err))
				continue
			}
			if action == "drain" {
				fmt.Fprintf(stdout, "%s: %s/%s drained for %s\n", n, name, target, dur)
			} else {
				fmt.Fprintf(stdout, "%s: %s/%s enabled\n", n, name, target)
			}
		}
		return errors.Join(errs...)
	}
	fs.Usage()
	return errUsage
}
