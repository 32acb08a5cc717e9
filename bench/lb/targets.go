package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// Addresses. Everything listens on loopback only.
const (
	havenAddr   = "127.0.0.1:18080"
	havenAdmin  = "127.0.0.1:19900"
	haproxyAddr = "127.0.0.1:18081"
	nginxAddr   = "127.0.0.1:18082"
	caddyAddr   = "127.0.0.1:18083"
	caddyAdmin  = "127.0.0.1:19901"
	// haven-epoll: a second haven, for A/B runs.
	havenEpollAddr  = "127.0.0.1:18084"
	havenEpollAdmin = "127.0.0.1:19902"
)

// backendAddrs are the three backends every proxy balances over; the
// "direct" target is the first of them.
var backendAddrs = []string{"127.0.0.1:18001", "127.0.0.1:18002", "127.0.0.1:18003"}

// backendNames name the backends in every proxy's configuration, so that
// "b2" means the same server to haven, HAProxy and the failover scenario.
var backendNames = []string{"b1", "b2", "b3"}

// errNotSupported is returned by start for a mode the proxy lacks.
var errNotSupported = errors.New("n/a")

// proxy is one load balancer under test. Each runs pinned to CPU 0 with one
// worker (process or thread).
type proxy struct {
	name string
	addr string
	// tcp reports whether the proxy has a TCP (layer 4) mode here.
	tcp bool
	// start writes the configuration for mode ("http" or "tcp") and starts
	// the proxy; failover adds the retry settings of the failover scenario.
	// It returns once the proxy forwards a request, or with an error.
	start func(ctx context.Context, b *bench, mode string, failover bool) (*service, error)
	// reload makes the running proxy reload its configuration.
	reload func(ctx context.Context, b *bench, s *service) error
	// drain stops new traffic to a backend while letting current traffic
	// finish; nil where the free version has no such control.
	drain func(ctx context.Context, b *bench, backend string) error
}

// tmplData is what the configuration templates see.
type tmplData struct {
	Dir      string
	Mode     string
	Failover bool
	Listen   string
	Admin    string
	Backends []backendData
	// AccessLog is haven's access log file ("": off), for the access
	// log scenario.
	AccessLog string
	// Threads is the proxy's worker threads or processes: the cores of
	// the current placement.
	Threads int
}

type backendData struct{ Name, Addr string }

func (b *bench) tmplData(mode string, failover bool, listen, admin string) tmplData {
	d := tmplData{Dir: b.dir, Mode: mode, Failover: failover, Listen: listen, Admin: admin, Threads: b.threads()}
	for i, a := range backendAddrs {
		d.Backends = append(d.Backends, backendData{backendNames[i], a})
	}
	return d
}

// ---- backends ----------------------------------------------------------

// Each backend is its own single-process nginx (master_process off), so that
// one can be killed or stopped alone. They return a fixed 14-byte body.
const backendConf = `user root;
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {{.Dir}}/{{.Name}}.pid;
error_log {{.Dir}}/log/{{.Name}}-error.log error;
events { worker_connections 19000; }
http {
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    server {
        listen {{.Addr}} backlog=4096;
        location / {
            default_type text/plain;
            return 200 "hello from {{.Name}}\n";
        }
    }
}
`

// startBackends starts the three backends pinned to CPU 1 and waits until
// each answers.
func (b *bench) startBackends(ctx context.Context) ([]*service, error) {
	var out []*service
	for i, addr := range backendAddrs {
		name := backendNames[i]
		conf := filepath.Join(b.dir, "backend-"+name+".conf")
		if err := harness.WriteTemplate(conf, backendConf, struct{ Dir, Name, Addr string }{b.dir, name, addr}); err != nil {
			return out, err
		}
		s, err := b.sv.start("backend-"+name, nil, "taskset", "-c", "1", "nginx", "-e", filepath.Join(b.dir, "log", "backend-"+name+"-error.log"), "-p", b.dir, "-c", conf)
		if err != nil {
			return out, err
		}
		out = append(out, s)
		if err := waitHTTP(ctx, "http://"+addr+"/", 10*time.Second, s); err != nil {
			return out, fmt.Errorf("backend %s: %w", name, err)
		}
	}
	return out, nil
}

// ---- haven -------------------------------------------------------------

const havenConf = `cluster: bench
regions:
  local:
    nodes:
      lb1: {address: 127.0.0.1, zone: a, admin: "{{.Admin}}"}
checks:
  web: {http: {path: /}, interval: 2s}
balancers:
  web:
    nodes: [lb1]
    listen: "{{.Listen}}"
    mode: {{.Mode}}
    algorithm: roundrobin
    check: web
{{- if .AccessLog}}
    access_log: {path: "{{.AccessLog}}"}
{{- end}}
    backends:
{{- range .Backends}}
      - {address: "{{.Addr}}", name: {{.Name}}}
{{- end}}
`

// havenProxy is haven's agent as target name, listening on addr with its
// admin API on admin, with env added to its environment.
func havenProxy(name, addr, admin string, env ...string) *proxy {
	return &proxy{
		name: name,
		addr: addr,
		tcp:  true,
		start: func(ctx context.Context, b *bench, mode string, failover bool) (*service, error) {
			if b.havenBuildErr != nil {
				return nil, b.havenBuildErr
			}
			conf := filepath.Join(b.dir, name+".yaml")
			if err := harness.WriteTemplate(conf, havenConf, b.tmplData(mode, failover, addr, admin)); err != nil {
				return nil, err
			}
			s, err := b.sv.start(name+"-"+mode, append([]string{b.gomaxprocs()}, env...), "taskset", "-c", b.proxyCPUs(), b.havenBin, "agent", "-c", conf, "-n", "lb1")
			if err != nil {
				return nil, err
			}
			if err := waitHTTP(ctx, "http://"+admin+"/readyz", 20*time.Second, s); err != nil {
				return s, err
			}
			return s, waitHTTP(ctx, "http://"+addr+"/", 10*time.Second, s)
		},
		// HOOK(haven): a reload is SIGHUP to the agent, which re-reads
		// haven.yaml and keeps serving.
		reload: func(_ context.Context, _ *bench, s *service) error { return s.signal(syscall.SIGHUP) },
		// HOOK(haven): drain is POST /api/v1/balancers/web/backends/NAME/drain
		// on the admin listener; any 2xx means accepted.
		drain: func(ctx context.Context, _ *bench, backend string) error {
			url := "http://" + admin + "/api/v1/balancers/web/backends/" + backend + "/drain"
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("drain: %w", err)
			}
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				return fmt.Errorf("drain: POST %s: %s", url, resp.Status)
			}
			return nil
		},
	}
}

// ---- HAProxy -----------------------------------------------------------

const haproxyConf = `global
    nbthread {{.Threads}}
    maxconn 10100
    # maxconn 10100 wants 20229 descriptors; run with the 20000 this
    # machine allows (the idle test needs ~10,100).
    no strict-limits
    stats socket {{.Dir}}/haproxy.sock mode 600 level admin
    hard-stop-after 30s
    # no "log" line: logging off

defaults
    mode {{.Mode}}
    maxconn 10100
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 1s
{{- if eq .Mode "http"}}
    timeout http-keep-alive 60s
{{- end}}
{{- if .Failover}}
    retries 3
    option redispatch
{{- if eq .Mode "http"}}
    retry-on conn-failure empty-response response-timeout
{{- end}}
{{- end}}

frontend fe
    bind {{.Listen}}{{if eq .Mode "http"}} defer-accept{{end}}
    default_backend be

backend be
    balance roundrobin
{{- if eq .Mode "http"}}
    http-reuse always
    # What haven (and Caddy) always tell a backend: the client and the scheme.
    option forwardfor
    http-request set-header X-Forwarded-Proto http
{{- end}}
    option httpchk GET /
    default-server check inter 2s rise 2 fall 3
{{- range .Backends}}
    server {{.Name}} {{.Addr}}
{{- end}}
`

func haproxyProxy() *proxy {
	return &proxy{
		name: "haproxy",
		addr: haproxyAddr,
		tcp:  true,
		start: func(ctx context.Context, b *bench, mode string, failover bool) (*service, error) {
			conf := filepath.Join(b.dir, "haproxy.cfg")
			if err := harness.WriteTemplate(conf, haproxyConf, b.tmplData(mode, failover, haproxyAddr, "")); err != nil {
				return nil, err
			}
			// -W: master-worker, so that SIGUSR2 reloads; -db: foreground.
			s, err := b.sv.start("haproxy-"+mode, nil, "taskset", "-c", b.proxyCPUs(), "haproxy", "-W", "-db", "-f", conf)
			if err != nil {
				return nil, err
			}
			return s, waitHTTP(ctx, "http://"+haproxyAddr+"/", 10*time.Second, s)
		},
		reload: func(_ context.Context, _ *bench, s *service) error { return s.signal(syscall.SIGUSR2) },
		drain: func(_ context.Context, b *bench, backend string) error {
			out, err := haproxyCommand(filepath.Join(b.dir, "haproxy.sock"), "set server be/"+backend+" state drain")
			if err != nil {
				return err
			}
			if strings.TrimSpace(out) != "" {
				return fmt.Errorf("haproxy: %s", strings.TrimSpace(out))
			}
			return nil
		},
	}
}

// haproxyCommand sends one command to HAProxy's runtime API.
func haproxyCommand(sock, cmd string) (string, error) {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return "", fmt.Errorf("haproxy runtime api: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(cmd + "\n")); err != nil {
		return "", fmt.Errorf("haproxy runtime api: %w", err)
	}
	var buf bytes.Buffer
	_, err = buf.ReadFrom(c)
	return buf.String(), err
}

// ---- nginx -------------------------------------------------------------

const nginxConf = `user root;
daemon off;
master_process on;
worker_processes {{.Threads}};
worker_rlimit_nofile 20000;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/log/nginx-error.log error;
{{- if eq .Mode "tcp"}}
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
{{- end}}
# 11000: the idle test holds 10,000 client connections, and nginx starts
# closing idle keep-alive connections when fewer than 1/16 are free.
events { worker_connections 11000; }
{{- if eq .Mode "http"}}
http {
    access_log off;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    upstream be {
{{- range .Backends}}
        server {{.Addr}} max_fails=1 fail_timeout=2s;
{{- end}}
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen {{.Listen}} backlog=4096 deferred;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # What haven (and Caddy) always tell a backend: the client and the scheme.
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_connect_timeout 2s;
{{- if .Failover}}
            proxy_next_upstream error timeout http_502 http_503;
{{- end}}
        }
    }
}
{{- else}}
stream {
    upstream be {
{{- range .Backends}}
        server {{.Addr}} max_fails=1 fail_timeout=2s;
{{- end}}
    }
    server {
        listen {{.Listen}} backlog=4096;
        proxy_pass be;
        proxy_connect_timeout 2s;
    }
}
{{- end}}
`

func nginxProxy() *proxy {
	conf := func(b *bench) string { return filepath.Join(b.dir, "nginx.conf") }
	return &proxy{
		name: "nginx",
		addr: nginxAddr,
		tcp:  true,
		start: func(ctx context.Context, b *bench, mode string, failover bool) (*service, error) {
			if err := harness.WriteTemplate(conf(b), nginxConf, b.tmplData(mode, failover, nginxAddr, "")); err != nil {
				return nil, err
			}
			s, err := b.sv.start("nginx-"+mode, nil, "taskset", "-c", b.proxyCPUs(), "nginx", "-e", filepath.Join(b.dir, "log", "nginx-error.log"), "-p", b.dir, "-c", conf(b))
			if err != nil {
				return nil, err
			}
			return s, waitHTTP(ctx, "http://"+nginxAddr+"/", 10*time.Second, s)
		},
		reload: func(ctx context.Context, b *bench, _ *service) error {
			_, err := harness.Run(ctx, 10*time.Second, nil, "nginx", "-e", filepath.Join(b.dir, "log", "nginx-error.log"), "-p", b.dir, "-c", conf(b), "-s", "reload")
			return err
		},
	}
}

// ---- Caddy -------------------------------------------------------------

const caddyConf = `{
    admin {{.Admin}}
    auto_https off
    storage file_system {{.Dir}}/caddy-data
}

http://:{{port .Listen}} {
    bind 127.0.0.1
    reverse_proxy{{range .Backends}} {{.Addr}}{{end}} {
        lb_policy round_robin
{{- if .Failover}}
        lb_try_duration 2s
{{- end}}
        health_uri /
        health_interval 2s
        health_timeout 1s
        fail_duration 2s
        transport http {
            keepalive 60s
            keepalive_idle_conns 64
            keepalive_idle_conns_per_host 64
        }
    }
}
`

// writeCaddyfile renders caddyConf, which needs the listener's port alone.
func writeCaddyfile(path string, d tmplData) error {
	t, err := template.New("Caddyfile").Funcs(template.FuncMap{"port": func(hp string) string {
		_, p, _ := net.SplitHostPort(hp)
		return p
	}}).Parse(caddyConf)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, d); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func caddyProxy() *proxy {
	conf := func(b *bench) string { return filepath.Join(b.dir, "Caddyfile") }
	env := func(b *bench) []string {
		return []string{b.gomaxprocs(), "HOME=" + b.dir, "XDG_DATA_HOME=" + filepath.Join(b.dir, "caddy-data"), "XDG_CONFIG_HOME=" + filepath.Join(b.dir, "caddy-config")}
	}
	return &proxy{
		name: "caddy",
		addr: caddyAddr,
		tcp:  false, // layer 4 is a plugin that Debian's caddy does not ship
		start: func(ctx context.Context, b *bench, mode string, failover bool) (*service, error) {
			if mode != "http" {
				return nil, errNotSupported
			}
			if err := writeCaddyfile(conf(b), b.tmplData(mode, failover, caddyAddr, caddyAdmin)); err != nil {
				return nil, err
			}
			s, err := b.sv.start("caddy-"+mode, env(b), "taskset", "-c", b.proxyCPUs(), "caddy", "run", "--config", conf(b), "--adapter", "caddyfile")
			if err != nil {
				return nil, err
			}
			return s, waitHTTP(ctx, "http://"+caddyAddr+"/", 15*time.Second, s)
		},
		reload: func(ctx context.Context, b *bench, _ *service) error {
			_, err := harness.Run(ctx, 10*time.Second, env(b), "caddy", "reload", "--config", conf(b), "--adapter", "caddyfile", "--address", caddyAdmin, "--force")
			return err
		},
	}
}

// ---- readiness ---------------------------------------------------------

// waitHTTP polls url until it answers 200, the deadline passes, or s exits.
// The error says what was last seen and, if s died, the tail of its output.
func waitHTTP(ctx context.Context, url string, deadline time.Duration, s *service) error {
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := "no attempt"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			if s != nil && s.exited() {
				return fmt.Errorf("exited (%v): %s", s.err, s.logTail(8))
			}
			return fmt.Errorf("GET %s not 200 within %s; last: %s; output: %s", url, deadline, last, func() string {
				if s == nil {
					return "-"
				}
				return s.logTail(5)
			}())
		case <-s.doneChan():
			return fmt.Errorf("exited (%v): %s", s.err, s.logTail(8))
		case <-tick.C:
		}
	}
}

// doneChan is s.done, or a channel that never closes for a nil service.
func (s *service) doneChan() <-chan struct{} {
	if s == nil {
		return nil
	}
	return s.done
}

// portFree reports whether nothing listens on addr.
func portFree(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
	if err != nil {
		return true
	}
	c.Close()
	return false
}
