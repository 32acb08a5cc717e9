package health

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/haven-ha/haven/internal/adminclient"
	"github.com/haven-ha/haven/internal/config"
)

// volumeProber asks the agent at the target's address, on its admin port,
// about its mount of a volume: the agent answers 200 while the mount is
// present, writable and answering, and 503 with the reason otherwise
// (internal/volume's Mount.Probe). The mount is the node's, so only its
// agent can look at it; the balancer's check reaches it over the network
// like any other probe.
type volumeProber struct {
	*httpProber
	name string
}

func newVolumeProber(c *config.VolumeProbe) (Prober, error) {
	scheme := "http"
	if c.TLS {
		scheme = "https"
	}
	hp, err := newHTTPProber(scheme, &config.HTTPProbe{
		Port:         c.Port,
		Path:         "/api/v1/volumes/" + url.PathEscape(c.Name) + "/mount",
		ExpectStatus: []int{http.StatusOK},
	})
	if err != nil {
		return nil, err
	}
	if c.TLS {
		tc, err := adminclient.TLSConfig(c.CA)
		if err != nil {
			return nil, fmt.Errorf("volume: %w", err)
		}
		hp.client.Transport.(*http.Transport).TLSClientConfig = tc
	}
	return &volumeProber{httpProber: hp, name: c.Name}, nil
}

// Probe passes on the agent's 200; on anything else it says what the agent
// said about its mount.
func (p *volumeProber) Probe(ctx context.Context, target string) error {
	addr, err := dialAddr(target, p.port, "")
	if err != nil {
		return fmt.Errorf("volume %s: %w", p.name, err)
	}
	u := *p.ref
	u.Scheme, u.Host = p.scheme, addr
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("volume %s: %w", p.name, err)
	}
	req.Close = true
	req.Header.Set("User-Agent", userAgent)
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("volume %s: ask the agent at %s: %w", p.name, addr, ctxCause(ctx, httpCause(err)))
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var body struct {
		Error string `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if json.Unmarshal(b, &body) == nil && body.Error != "" {
		return fmt.Errorf("volume %s: %s", p.name, body.Error)
	}
	return fmt.Errorf("volume %s: the agent at %s answered %d", p.name, addr, resp.StatusCode)
}
