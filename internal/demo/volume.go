package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/haven-ha/haven/internal/netlab"
)

// The sixth act: the application's files on a replicated volume. Three
// storage nodes hold a GlusterFS volume that haven made, each application
// node mounts it, and st1's balancer sends the application's requests to
// app1 and app2 while their mounts are usable. A photo is uploaded
// through the balancer; the application node that stored it is killed
// (every process on it); the other serves the same bytes from the volume.

// VolumeResult summarises the volume act.
type VolumeResult struct {
	// StoredBy stored the upload and was killed; ServedBy served it
	// after.
	StoredBy, ServedBy string
	// Identical: the bytes served after the kill are the uploaded ones.
	Identical bool
	// Served is how long after the kill the file was first served.
	Served time.Duration
}

// volHosts are the sixth act's machines: st1-st3 198.18.1.11-13 (storage,
// etcd; st1 also the balancer), app1 and app2 198.18.1.14-15.
var volHosts = []string{"st1", "st2", "st3", "app1", "app2"}

func volAddr(host string) string {
	for i, h := range volHosts {
		if h == host {
			return "198.18.1." + strconv.Itoa(11+i)
		}
	}
	return ""
}

// CanRunVolume says whether this machine can run the volume act: what the
// second act needs, GlusterFS's server and client, FUSE and nsenter.
func CanRunVolume() error {
	if err := CanRunFloating(); err != nil {
		return err
	}
	for _, bin := range []string{"glusterd", "glusterfs", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("it needs GlusterFS and nsenter (apt-get install glusterfs-server glusterfs-client util-linux): %w", err)
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("it needs FUSE: %w", err)
	}
	return nil
}

func volumeConfig(dir string) string {
	return fmt.Sprintf(`cluster: demo-volume
admin: {token_file: %[1]s/token}
regions:
  lab:
    nodes:
      st1: {address: %[2]s, zone: a}
      st2: {address: %[3]s, zone: b}
      st3: {address: %[4]s, zone: c}
      app1: {address: %[5]s, zone: a}
      app2: {address: %[6]s, zone: b}
coordination:
  members: [st1, st2, st3]
  data_dir: %[1]s/{node}/etcd
checks:
  files: {volume: {name: files}, interval: 500ms, timeout: 400ms, rise: 1, fall: 1}
balancers:
  web:
    nodes: [st1]
    listen: ":8080"
    check: files
    backends:
      - {address: %[5]s:8081}
      - {address: %[6]s:8081}
volumes:
  files:
    servers: [st1, st2, st3]
    brick: %[1]s/{node}/brick
    glusterd_dir: %[1]s/{node}/glusterd
    mount: {nodes: [app1, app2], path: %[1]s/uploads}
`, dir, volAddr("st1"), volAddr("st2"), volAddr("st3"), volAddr("app1"), volAddr("app2"))
}

// RunVolume plays the volume act.
func RunVolume(ctx context.Context, opt Options) (*VolumeResult, error) {
	opt = opt.defaults()
	st, err := newStage(ctx, "volume", netlab.Options{Hosts: volHosts}, func(dir string) map[string]string {
		return map[string]string{"haven.yaml": volumeConfig(dir), "token": "demo\n"}
	})
	if err != nil {
		return nil, err
	}
	defer st.close()
	n, exe, cfgPath := st.net, st.exe, st.path("haven.yaml")
	w := opt.Out
	fmt.Fprintf(w, "\nhaven demo, act 6: the application's files on a replicated volume\n")
	fmt.Fprintf(w, "  st1-st3 %s-13 (GlusterFS bricks, embedded etcd; st1 also the balancer on :8080); app1, app2 %s, %s mount the volume; config %s\n",
		volAddr("st1"), volAddr("app1"), volAddr("app2"), cfgPath)
	procCtx, stopProcs := context.WithCancel(context.WithoutCancel(ctx))
	defer stopProcs()
	agents := map[string]*netlab.Proc{}
	for _, h := range volHosts {
		p, err := n.Host(h).Start(procCtx, exe, "agent", "-c", cfgPath, "-n", h)
		if err != nil {
			return nil, err
		}
		agents[h] = p
	}
	logs := func() string { return netlab.Outputs(8000, agents["st1"], agents["app1"], agents["app2"]) }
	client := n.Host("st1")
	admin := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: client.DialContext, DisableKeepAlives: true}}
	start := time.Now()
	since := func(t time.Time) string { return fmt.Sprintf("T+%5.2fs", t.Sub(start).Seconds()) }
	for _, app := range []string{"app1", "app2"} {
		if err := waitMount(ctx, admin, app, 3*time.Minute); err != nil {
			return nil, fmt.Errorf("demo: %w\n%s", err, logs())
		}
	}
	fmt.Fprintf(w, "\n%s  the volume is up: the servers made the pool and the replica 3 volume, app1 and app2 mounted it\n", since(time.Now()))
	// Each application runs in its node's mount namespace (the agent's,
	// which has the mount), as a service on that machine would.
	for _, app := range []string{"app1", "app2"} {
		if _, err := n.Host(app).Start(procCtx, "nsenter", "--target", strconv.Itoa(agents[app].PID), "--mount", "--",
			exe, "backend", "--listen", volAddr(app)+":8081", "--name", app, "--files", st.path("uploads")); err != nil {
			return nil, err
		}
	}
	web := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: client.DialContext, DisableKeepAlives: true}}
	url := "http://" + volAddr("st1") + ":8080/files/photo.jpg"
	photo := make([]byte, 256<<10)
	if _, err := rand.Read(photo); err != nil {
		return nil, err
	}
	res := &VolumeResult{}
	if err := retry(ctx, time.Minute, func() error {
		var err error
		res.StoredBy, err = upload(web, url, photo)
		return err
	}); err != nil {
		return nil, fmt.Errorf("demo: upload: %w\n%s", err, logs())
	}
	fmt.Fprintf(w, "%s  PUT %s (256 KiB) through the balancer: stored by %s, on all three bricks before it answered\n", since(time.Now()), url, res.StoredBy)
	if !sleepCtx(ctx, opt.Phase) {
		return res, ctx.Err()
	}
	killedAt := time.Now()
	pids, err := n.Host(res.StoredBy).PIDs()
	if err != nil {
		return res, err
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	fmt.Fprintf(w, "%s  kill -9 of everything on %s: its agent, its application, its volume client\n", since(killedAt), res.StoredBy)
	var got []byte
	if err := retry(ctx, time.Minute, func() error {
		var err error
		got, res.ServedBy, err = download(web, url)
		if err == nil && res.ServedBy == res.StoredBy {
			err = fmt.Errorf("served by %s, which was killed", res.ServedBy)
		}
		return err
	}); err != nil {
		return res, fmt.Errorf("demo: download after the kill: %w\n%s", err, logs())
	}
	res.Served = time.Since(killedAt)
	res.Identical = bytes.Equal(got, photo)
	fmt.Fprintf(w, "%s  GET %s: served by %s from the volume, %d bytes, identical to the upload: %v\n", since(time.Now()), url, res.ServedBy, len(got), res.Identical)
	if !res.Identical {
		return res, fmt.Errorf("demo: the file served after %s's loss differs from the upload", res.StoredBy)
	}
	return res, nil
}

// waitMount waits until app's agent says its mount is usable.
func waitMount(ctx context.Context, c *http.Client, app string, within time.Duration) error {
	return retry(ctx, within, func() error {
		resp, err := c.Get("http://" + volAddr(app) + ":9900/api/v1/volumes/files/mount")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			var e struct{ Error string }
			_ = json.NewDecoder(resp.Body).Decode(&e)
			return fmt.Errorf("%s's mount: %s", app, e.Error)
		}
		return nil
	})
}

func upload(c *http.Client, url string, body []byte) (string, error) {
	req, err := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		StoredBy string `json:"stored_by"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &out) != nil || out.StoredBy == "" {
		return "", fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return out.StoredBy, nil
}

func download(c *http.Client, url string) ([]byte, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return b, resp.Header.Get("X-Backend"), err
}

// retry calls f until it succeeds, within, or ctx ends; it returns f's
// last error.
func retry(ctx context.Context, within time.Duration, f func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
}
