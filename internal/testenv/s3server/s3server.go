// Package s3server runs a real S3 server for tests: versitygw (Versity's
// S3 gateway, github.com/versity/versitygw) with its posix backend, which
// serves a directory: each subdirectory is a bucket, each file an object.
// scripts/prereqs.sh installs it from the Go module proxy. A test that
// starts one is skipped off CI when it is missing, and fails in CI
// (testenv.Need).
package s3server

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testenv"
)

// Install is how scripts/prereqs.sh installs the server; a skipped test
// names it.
const Install = "GOBIN=/usr/local/bin go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// Server is one versitygw process on 127.0.0.1, serving Dir.
type Server struct {
	// Endpoint is the server's URL, such as http://127.0.0.1:41234.
	Endpoint string
	// Addr is its host:port.
	Addr string
	// AccessKey and SecretKey are the root account's credentials.
	AccessKey, SecretKey string
	// Region is the region the server answers as.
	Region string
	// Dir holds the buckets.
	Dir string

	t    testing.TB
	bin  string
	args []string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// Options change how the server runs.
type Options struct {
	// VirtualDomain, when set, makes the server take virtual-host style
	// requests: a bucket b is addressed as b.VirtualDomain.
	VirtualDomain string
}

// Start runs a server on a free port with a fresh directory and random
// credentials, waits until it accepts connections, and stops it when the
// test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := exec.LookPath("versitygw")
	testenv.Need(t, err == nil, "needs versitygw, an S3 server (scripts/prereqs.sh installs it: %s)", Install)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	tmp := t.TempDir()
	s := &Server{
		Endpoint:  "http://" + addr,
		Addr:      addr,
		AccessKey: "haven" + rand.Text()[:8],
		SecretKey: rand.Text(),
		Region:    "us-east-1",
		Dir:       filepath.Join(tmp, "data"),
		t:         t,
		bin:       bin,
		log:       filepath.Join(tmp, "versitygw.log"),
	}
	if err := os.Mkdir(s.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s.args = []string{"--port", addr, "--region", s.Region, "--quiet"}
	if opts.VirtualDomain != "" {
		s.args = append(s.args, "--virtual-domain", opts.VirtualDomain)
	}
	s.args = append(s.args, "posix", s.Dir)
	t.Cleanup(s.Stop)
	s.Start()
	return s
}

// Start starts the server again after Stop, on the same address and
// directory.
func (s *Server) Start() {
	s.t.Helper()
	if s.cmd != nil {
		s.t.Fatal("s3server: already running")
	}
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(s.bin, s.args...)
	// The credentials go through the environment, not the command line
	// that ps shows.
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+s.AccessKey, "ROOT_SECRET_ACCESS_KEY="+s.SecretKey)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(s.done)
	testenv.Poll(s.t, 20*time.Second, "versitygw accepts connections on "+s.Addr, func() (bool, string) {
		select {
		case <-s.done:
			s.t.Fatalf("versitygw exited: %s", s.Log())
		default:
		}
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
}

// Stop kills the server (SIGKILL, as a crash would) and waits for it to
// exit. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Bucket makes a bucket, a directory of the posix backend.
func (s *Server) Bucket(name string) {
	s.t.Helper()
	if err := os.Mkdir(filepath.Join(s.Dir, name), 0o700); err != nil {
		s.t.Fatal(err)
	}
}

// CredentialsFile writes the credentials as an AWS shared credentials
// file and returns its path.
func (s *Server) CredentialsFile() string {
	s.t.Helper()
	p := filepath.Join(s.t.TempDir(), "credentials")
	body := fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", s.AccessKey, s.SecretKey)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// Log is what the server has printed.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.log)
	return strings.TrimSpace(string(b))
}
