package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/jackc/pgx/v5"
)

// bench is one run of the harness.
type bench struct {
	opt  options
	dirs harness.Dirs

	uid, gid int // postgres's
	port     int
	sock     string // unix socket directory
	data     string // the data directory
	dataSize int64  // its files' bytes, pg_wal left out

	s3Addr, s3Key, s3Secret string
	s3Dir                   string // versitygw's posix root: one directory per bucket
	s3CA                    *x509.CertPool
	s3Cmd                   *exec.Cmd

	pgbrConf string // pgBackRest's configuration: repo1 file, repo2 s3

	repos     map[string]repo.Repository // haven's, by kind
	repoDirs  map[string]string          // where a repository's objects are on disk
	archivers []func()                   // stop haven's archivers of the backup phases

	mu    sync.Mutex
	procs []*exec.Cmd // long-running children, killed on interrupt

	versions []string
	machine  []string
}

const (
	cluster = "shop"  // haven's cluster name in its repositories
	stanza  = "bench" // pgBackRest's
	bucket  = "bench"
)

func (b *bench) run(ctx context.Context) (err error) {
	if os.Geteuid() != 0 {
		return fmt.Errorf("run as root: PostgreSQL runs as the postgres user, and pgBackRest may need installing")
	}
	if b.dirs, err = harness.NewDirs("backup", true); err != nil {
		return err
	}
	defer func() {
		b.stopAll()
		harness.RemoveWorkDir(b.dirs.Work, b.opt.keep)
	}()
	b.machine = harness.Machine()
	if err := b.setup(ctx); err != nil {
		return err
	}
	var rep report
	rep.start = harness.LoadAverage()
	if b.opt.has("full") {
		if rep.full, err = b.measureFull(ctx); err != nil {
			return err
		}
	}
	if b.opt.has("incr") {
		if rep.incr, err = b.measureIncr(ctx); err != nil {
			return err
		}
	}
	for _, stop := range b.archivers {
		stop()
	}
	b.archivers = nil
	if b.opt.has("archive") {
		if rep.delay, err = b.measureDelay(ctx); err != nil {
			return err
		}
	}
	rep.end = harness.LoadAverage()
	md := b.render(&rep)
	out, err := harness.WriteReport(os.Stdout, b.dirs.Here, b.opt.out, b.opt.quick, md)
	if err != nil {
		return err
	}
	harness.Logf("report: %s; raw: %s", out, b.dirs.Raw)
	return nil
}

// setup installs pgBackRest, starts PostgreSQL with pgbench's data, the
// S3 server, haven's archivers, and creates pgBackRest's stanza.
func (b *bench) setup(ctx context.Context) error {
	if err := b.opt.install.Ensure(ctx, "pgbackrest"); err != nil {
		return err
	}
	for _, p := range []string{"postgres", "initdb", "pg_ctl", "pgbench", "pg_basebackup"} {
		if _, err := os.Stat(filepath.Join(b.opt.bindir, p)); err != nil {
			return fmt.Errorf("needs PostgreSQL 15's %s in %s (apt-get install postgresql-15, or -bindir): %w", p, b.opt.bindir, err)
		}
	}
	if _, err := exec.LookPath("versitygw"); err != nil {
		return fmt.Errorf("needs versitygw, the S3 server haven's tests use: bash scripts/prereqs.sh builds it")
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("needs the postgres user (Debian's postgresql package makes it): %w", err)
	}
	b.uid, _ = strconv.Atoi(u.Uid)
	b.gid, _ = strconv.Atoi(u.Gid)
	if err := os.Chmod(b.dirs.Work, 0o711); err != nil {
		return err
	}
	b.versions = append(b.versions, harness.HavenVersion(ctx, b.dirs.Root, true))
	for _, argv := range [][]string{
		{filepath.Join(b.opt.bindir, "postgres"), "--version"},
		{"pgbackrest", "version"},
		// go install leaves versitygw's own --version at "git"; the
		// binary's build information names the module's version.
		{"sh", "-c", "echo versitygw $(go version -m \"$(command -v versitygw)\" | awk '$1 == \"mod\" {print $3}')"},
		{"go", "version"},
	} {
		out, _ := harness.Run(ctx, 30*time.Second, nil, argv...)
		b.versions = append(b.versions, harness.FirstLine(out))
	}
	if err := b.startPostgres(ctx); err != nil {
		return err
	}
	if err := b.startS3(ctx); err != nil {
		return err
	}
	if err := b.openRepos(); err != nil {
		return err
	}
	if err := b.writePgBackRestConf(); err != nil {
		return err
	}
	if _, err := b.pgbackrest(ctx, time.Minute, "stanza-create"); err != nil {
		return err
	}
	if err := b.sql(ctx, fmt.Sprintf("ALTER SYSTEM SET archive_command = %s", quoteLit(b.archivePush(b.pgbrConf)))); err != nil {
		return err
	}
	if err := b.sql(ctx, "SELECT pg_reload_conf()"); err != nil {
		return err
	}
	if _, err := b.pgbackrest(ctx, 2*time.Minute, "check"); err != nil {
		return err
	}
	for _, kind := range b.opt.repos {
		b.archivers = append(b.archivers, b.startArchiver(ctx, kind, cluster, "haven_"+kind))
	}
	b.dataSize = dirSize(b.data)
	harness.Logf("data directory: %.0f MiB without pg_wal", mib(b.dataSize))
	return nil
}

// asPostgres runs argv as the postgres user.
func (b *bench) asPostgres(ctx context.Context, timeout time.Duration, argv ...string) (string, error) {
	return harness.Run(ctx, timeout, nil, append([]string{"runuser", "-u", "postgres", "--"}, argv...)...)
}

func (b *bench) mkdirPostgres(p string) error {
	if err := os.MkdirAll(p, 0o700); err != nil {
		return err
	}
	return os.Chown(p, b.uid, b.gid)
}

func (b *bench) startPostgres(ctx context.Context) error {
	b.port = 20000 + os.Getpid()%20000
	b.sock = filepath.Join(b.dirs.Work, "sock")
	b.data = filepath.Join(b.dirs.Work, "data")
	for _, d := range []string{b.sock, b.data} {
		if err := b.mkdirPostgres(d); err != nil {
			return err
		}
	}
	if out, err := b.asPostgres(ctx, 2*time.Minute, filepath.Join(b.opt.bindir, "initdb"), "-D", b.data, "-A", "trust", "-U", "postgres"); err != nil {
		return fmt.Errorf("initdb: %w: %s", err, harness.LastLines(out, 5))
	}
	conf := fmt.Sprintf(`
listen_addresses = ''
port = %d
unix_socket_directories = '%s'
shared_buffers = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
archive_mode = on
archive_command = '/bin/true'
logging_collector = off
`, b.port, b.sock)
	f, err := os.OpenFile(filepath.Join(b.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(conf)
	f.Close()
	if err != nil {
		return err
	}
	log := filepath.Join(b.dirs.Raw, "postgres.log")
	os.WriteFile(log, nil, 0o644)
	os.Chown(log, b.uid, b.gid)
	if out, err := b.asPostgres(ctx, 2*time.Minute, filepath.Join(b.opt.bindir, "pg_ctl"), "-D", b.data, "-l", log, "-w", "start"); err != nil {
		return fmt.Errorf("pg_ctl start: %w: %s", err, harness.LastLines(out, 5))
	}
	harness.Logf("pgbench -i -s %d", b.opt.scale)
	if out, err := harness.Run(ctx, 30*time.Minute, nil, filepath.Join(b.opt.bindir, "pgbench"), "-i", "-q", "-s", strconv.Itoa(b.opt.scale),
		"-h", b.sock, "-p", strconv.Itoa(b.port), "-U", "postgres", "postgres"); err != nil {
		return fmt.Errorf("pgbench -i: %w: %s", err, harness.LastLines(out, 5))
	}
	if err := b.sql(ctx, "CHECKPOINT"); err != nil {
		return err
	}
	return nil
}

func (b *bench) stopPostgres() {
	if b.data == "" {
		return
	}
	ctx := context.Background()
	b.asPostgres(ctx, time.Minute, filepath.Join(b.opt.bindir, "pg_ctl"), "-D", b.data, "-m", "immediate", "stop")
}

// connConfig reaches the server over its socket as postgres.
func (b *bench) connConfig() *pgx.ConnConfig {
	cc, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", b.sock, b.port))
	if err != nil {
		panic(err)
	}
	return cc
}

func (b *bench) connect(ctx context.Context) (*pgx.Conn, error) {
	return pgx.ConnectConfig(ctx, b.connConfig())
}

func (b *bench) sql(ctx context.Context, q string, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	c, err := b.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, q, args...); err != nil {
		return fmt.Errorf("%s: %w", harness.Truncate(q, 60), err)
	}
	return nil
}

func quoteLit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// startS3 runs versitygw's posix backend over TLS, with a certificate for
// 127.0.0.1 made here: pgBackRest speaks only https to S3.
func (b *bench) startS3(ctx context.Context) error {
	dir := filepath.Join(b.dirs.Work, "s3")
	b.s3Dir = filepath.Join(dir, "data")
	if err := os.MkdirAll(filepath.Join(b.s3Dir, bucket), 0o700); err != nil {
		return err
	}
	cert, key, pool, err := selfSigned()
	if err != nil {
		return err
	}
	b.s3CA = pool
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, cert, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	b.s3Addr = l.Addr().String()
	l.Close()
	b.s3Key, b.s3Secret = "bench"+rand.Text()[:8], rand.Text()
	logf, err := os.Create(filepath.Join(b.dirs.Raw, "versitygw.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("versitygw", "--port", b.s3Addr, "--region", "us-east-1", "--quiet", "--keep-alive",
		"--cert", certFile, "--key", keyFile, "posix", b.s3Dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+b.s3Key, "ROOT_SECRET_ACCESS_KEY="+b.s3Secret)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	b.s3Cmd = cmd
	b.mu.Lock()
	b.procs = append(b.procs, cmd)
	b.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", b.s3Addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("versitygw does not accept connections on %s after 20s: %v", b.s3Addr, err)
		}
		if !harness.Sleep(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// selfSigned returns a certificate and key for 127.0.0.1, in PEM, and a
// pool that trusts it.
func selfSigned() (certPEM, keyPEM []byte, pool *x509.CertPool, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return nil, nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, nil, nil, err
	}
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), pool, nil
}

// openRepos opens haven's repositories: a directory, and the bucket under
// the prefix haven/.
func (b *bench) openRepos() error {
	b.repos, b.repoDirs = map[string]repo.Repository{}, map[string]string{}
	fdir := filepath.Join(b.dirs.Work, "haven-repo")
	if err := os.MkdirAll(fdir, 0o700); err != nil {
		return err
	}
	f, err := repo.OpenFile(fdir)
	if err != nil {
		return err
	}
	b.repos["file"], b.repoDirs["file"] = f, fdir
	creds := filepath.Join(b.dirs.Work, "s3", "credentials")
	if err := os.WriteFile(creds, []byte(fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", b.s3Key, b.s3Secret)), 0o600); err != nil {
		return err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: b.s3CA}
	tr.MaxIdleConnsPerHost = 16
	path := true
	s, err := repo.OpenS3(repo.S3Config{Bucket: bucket, Prefix: "haven", Endpoint: "https://" + b.s3Addr, Region: "us-east-1",
		PathStyle: &path, CredentialsFile: creds, Transport: tr})
	if err != nil {
		return err
	}
	b.repos["s3"], b.repoDirs["s3"] = s, filepath.Join(b.s3Dir, bucket, "haven")
	return nil
}

// writePgBackRestConf writes pgBackRest's configuration: repo1 a directory,
// repo2 the bucket under /pgbackrest, archive-push asynchronous.
func (b *bench) writePgBackRestConf() error {
	dir := filepath.Join(b.dirs.Work, "pgbackrest")
	for _, d := range []string{dir, filepath.Join(dir, "repo"), filepath.Join(dir, "log"), filepath.Join(dir, "lock"), filepath.Join(dir, "spool")} {
		if err := b.mkdirPostgres(d); err != nil {
			return err
		}
	}
	host, port, _ := net.SplitHostPort(b.s3Addr)
	b.pgbrConf = filepath.Join(dir, "pgbackrest.conf")
	return b.writeConf(b.pgbrConf, fmt.Sprintf(`[global]
repo1-path=%[1]s/repo
repo1-retention-full=9999
repo2-type=s3
repo2-path=/pgbackrest
repo2-s3-bucket=%[2]s
repo2-s3-endpoint=%[3]s
repo2-storage-port=%[4]s
repo2-storage-verify-tls=n
repo2-s3-uri-style=path
repo2-s3-region=us-east-1
repo2-s3-key=%[5]s
repo2-s3-key-secret=%[6]s
repo2-retention-full=9999
log-level-console=warn
log-level-file=off
lock-path=%[1]s/lock
spool-path=%[1]s/spool
start-fast=y
archive-async=y
compress-type=lz4

[global:archive-push]
process-max=2

[%[7]s]
pg1-path=%[8]s
pg1-socket-path=%[9]s
pg1-port=%[10]d
`, dir, bucket, host, port, b.s3Key, b.s3Secret, stanza, b.data, b.sock, b.port))
}

func (b *bench) writeConf(p, body string) error {
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		return err
	}
	return os.Chown(p, b.uid, b.gid)
}

func (b *bench) archivePush(conf string) string {
	return fmt.Sprintf("pgbackrest --config=%s --stanza=%s archive-push %%p", conf, stanza)
}

// pgbackrest runs pgBackRest as postgres with the bench's configuration.
func (b *bench) pgbackrest(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	argv := append([]string{"pgbackrest", "--config=" + b.pgbrConf, "--stanza=" + stanza}, args...)
	out, err := b.asPostgres(ctx, timeout, argv...)
	if err != nil {
		return out, fmt.Errorf("pgbackrest %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

// startArchiver runs haven's WAL archiver into the repository of kind
// until the returned function is called, which also drops its slot.
func (b *bench) startArchiver(ctx context.Context, kind, clusterName, slot string) func() {
	a, err := wal.New(wal.Config{Conn: &b.connConfig().Config, Repo: b.repos[kind], Cluster: clusterName, Slot: slot,
		ApplicationName: slot, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		panic(err) // the configuration is the bench's own
	}
	actx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				harness.Logf("archiver %s: %v", kind, err)
			}
			// The run's ctx may have ended (an interrupt): the server is
			// still up until stopAll stops it.
			if err := b.sql(context.Background(), "SELECT pg_drop_replication_slot($1)", slot); err != nil {
				harness.Logf("drop slot %s: %v", slot, err)
			}
		})
	}
}

func (b *bench) stopAll() {
	for _, stop := range b.archivers {
		stop()
	}
	b.stopPostgres()
	b.kill()
}

// kill kills the long-running children.
func (b *bench) kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.procs {
		if c.Process != nil {
			syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			c.Wait()
		}
	}
	b.procs = nil
}

// dirSize is the size of the regular files under dir, pg_wal's left out.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && d.Name() == "pg_wal" {
			return fs.SkipDir
		}
		if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
