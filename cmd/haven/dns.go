package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/gtm"
)

const dnsUsage = `usage: haven dns serve|drain|enable|status [NAME TARGET] [flags]

actions:
  serve -n NODE                 run NODE's traffic manager alone in the foreground, on its own
                                checks (no agent, no etcd; SIGHUP reloads; for trying a zone)
  drain NAME TARGET [--for D] [--reason R]
                                take TARGET out of NAME's answers on every name server (default for 1h):
                                with coordination, a record in etcd every name server applies and a
                                restarted one finds; without, each name server's, in memory
  enable NAME TARGET            end the drain
  status                        what every managed name answers now, as each name server says

flags:
`

// runDNS drives the traffic managers of traffic.nameservers.
func runDNS(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dns", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, dnsUsage); fs.PrintDefaults() }
	cfgPath := configFlag(fs)
	dur := fs.Duration("for", time.Hour, "drain: how long the target stays out")
	reason := fs.String("reason", "", "drain, with coordination: why, kept with the record")
	node := fs.String("n", "", "serve: the node whose traffic manager to run (one of traffic.nameservers)")
	within := nodeTimeoutFlag(fs)
	output := outputFlag(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return parseError(err)
	}
	if len(pos) == 0 {
		fs.Usage()
		return errUsage
	}
	if pos[0] == "serve" && len(pos) == 1 {
		return serveDNS(*cfgPath, *node, stderr)
	}
	ac, err := newAdminClient(*cfgPath)
	if err != nil {
		return err
	}
	t := ac.cfg.Traffic
	if t == nil {
		return errors.New("haven.yaml has no traffic section: add one (docs/traffic.md)")
	}
	switch action := pos[0]; {
	case action == "status" && len(pos) == 1:
		if err := checkOutput(*output); err != nil {
			return err
		}
		if *output == "json" {
			return printJSONAnswers(stdout, ac, t.Nameservers, "/api/v1/status", *within, nil, false)
		}
		as := askEach[nodeStatus](ac, t.Nameservers, "/api/v1/status", *within)
		printTraffic(stdout, as)
		return answerErrors(as)
	case (action == "drain" || action == "enable") && len(pos) == 3:
		name, target := pos[1], pos[2]
		if rec := t.Records[name]; rec == nil {
			return fmt.Errorf("traffic.records has no name %q", name)
		}
		path := "/api/v1/traffic/" + url.PathEscape(name) + "/" + url.PathEscape(target) + "/" + action
		if action == "drain" {
			path += "?" + url.Values{"for": {dur.String()}, "reason": {*reason}}.Encode()
		}
		if ac.cfg.Coordination != nil {
			// A record in etcd, which every name server applies: one
			// call, through any name server that is connected.
			via, err := askAny(ac, t.Nameservers, "POST", path, nil)
			if err != nil {
				return err
			}
			if action == "drain" {
				fmt.Fprintf(stdout, "%s/%s drained for %s on every name server (recorded in etcd through %s)\n", name, target, dur, via)
			} else {
				fmt.Fprintf(stdout, "%s/%s enabled on every name server (record removed through %s)\n", name, target, via)
			}
			return nil
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

// serveDNS runs one node's traffic manager in the foreground: the same
// server and checks as the agent's traffic role, standalone (each
// instance answers by its own checks), until SIGINT or SIGTERM.
func serveDNS(cfgPath, node string, stderr io.Writer) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	if cfg.Traffic == nil || !slices.Contains(cfg.Traffic.Nameservers, node) {
		return fmt.Errorf("dns serve: -n NODE must be one of traffic.nameservers in %s, not %q", cfgPath, node)
	}
	log := newLogger(stderr, "info", false).With("node", node)
	svc, err := gtm.NewService(cfg, node, gtm.ServiceOptions{Logger: log})
	if err != nil {
		return err
	}
	defer svc.Close()
	udp, tcp, err := svc.Listen()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go onSignal(ctx, hup, func() {
		cfg, err := config.Load(cfgPath)
		if err == nil {
			var restart []string
			if restart, err = svc.Reload(cfg); len(restart) > 0 {
				log.Warn("reload: these changes take effect when haven dns restarts", "changed", restart)
			}
		}
		if err != nil {
			log.Error("reload rejected: the running configuration stays", "err", err)
		}
	})
	log.Info("haven dns serving", "zone", cfg.Traffic.Zone, "listen", udp.LocalAddr().String())
	return svc.Run(ctx, udp, tcp)
}
