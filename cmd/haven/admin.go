package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/config"
)

// adminClient is the commands' client of the agents' admin API: it finds
// each node's admin address in haven.yaml and sends the admin token.
type adminClient struct {
	cfg    *config.Config
	token  string
	client *http.Client
}

// newAdminClient reads the configuration and the admin token it names.
func newAdminClient(cfgPath string) (*adminClient, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	ac := &adminClient{cfg: cfg, client: &http.Client{Timeout: 10 * time.Second}}
	if cfg.Admin.TokenFile != "" {
		b, err := os.ReadFile(cfg.Admin.TokenFile)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read admin token: %w", err)
		}
		ac.token = strings.TrimSpace(string(b))
	}
	return ac, nil
}

// adminURL is the base URL of a node's admin API.
func (ac *adminClient) adminURL(node string) (string, error) {
	n, ok := ac.cfg.Node(node)
	if !ok {
		return "", fmt.Errorf("node %q is not in the configuration (nodes: %v)", node, ac.cfg.NodeNames())
	}
	host, port, err := net.SplitHostPort(n.Admin)
	if err != nil {
		return "", fmt.Errorf("node %s: admin address %q: %w", node, n.Admin, err)
	}
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		host = n.Address
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// errUnreachable is wrapped by do's error when the request never reached
// the node's agent (it could not connect): only then may a caller ask
// another node to do what it asked, without risking doing it twice.
var errUnreachable = errors.New("unreachable")

func (ac *adminClient) do(method, node, path string, out any) error {
	base, err := ac.adminURL(node)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(method, base+path, nil)
	if err != nil {
		return err
	}
	if ac.token != "" {
		req.Header.Set("Authorization", "Bearer "+ac.token)
	}
	resp, err := ac.client.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			// Nothing reached the agent: another node may be asked.
			return fmt.Errorf("node %s: %w (is its agent running?): %w", node, err, errUnreachable)
		}
		return fmt.Errorf("node %s: %w", node, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode >= 300 {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("node %s: %s", node, e.Error)
		}
		return fmt.Errorf("node %s: %s: %s", node, resp.Status, strings.TrimSpace(string(body)))
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}

// pickBalancer returns the balancer named by -b, or the only one.
func (ac *adminClient) pickBalancer(name string) (*config.Balancer, error) {
	if name != "" {
		b, ok := ac.cfg.Balancers[name]
		if !ok {
			return nil, fmt.Errorf("no balancer %q in the configuration", name)
		}
		return b, nil
	}
	if len(ac.cfg.Balancers) == 1 {
		for _, b := range ac.cfg.Balancers {
			return b, nil
		}
	}
	var names []string
	for n := range ac.cfg.Balancers {
		names = append(names, n)
	}
	slices.Sort(names)
	return nil, fmt.Errorf("say which balancer with -b (balancers: %v)", names)
}
