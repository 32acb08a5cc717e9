package vip_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/haven-ha/haven/internal/testnet"
)

// healCycles is how many cut-and-heal cycles TestHealCostsNothing runs;
// HAVEN_HEAL_CYCLES=20 runs the twenty.
func healCycles(t *testing.T) int {
	n := 4
	if v := os.Getenv("HAVEN_HEAL_CYCLES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("HAVEN_HEAL_CYCLES=%q is not a positive number", v)
		}
	}
	return n
}

// TestHealCostsNothing cuts the holder off from the other two nodes for 5s
// (the client still reaches every node), heals, and again: the other side
// takes the address over during the cut, and after the heal the address
// must not go dark for even one probe. In every other cycle the holder is
// made etcd's leader first (the case that went dark: the new holder,
// leading etcd, moved its leadership to the node that had just returned
// and still applied its backlog, and its renewals stalled behind that).
func TestHealCostsNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three agents in namespaces; skipped with -short")
	}
	cutAndHeal(t, startCluster(t))
}

// TestHealCostsNothingWithASlowDisk is TestHealCostsNothing with n3's etcd
// member on a disk whose every fsync takes 25ms longer: a member that
// lags and catches up slowly, which leadership must not be moved to.
func TestHealCostsNothingWithASlowDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three agents in namespaces; skipped with -short")
	}
	cutAndHeal(t, startClusterWith(t, "n3", 25*time.Millisecond))
}

func cutAndHeal(t *testing.T, c *cluster) {
	for i := range healCycles(t) {
		h := c.holder()
		if i%2 == 1 {
			c.moveEtcdLeader(h)
		}
		leader := c.etcdLeader()
		var others []*testnet.Host
		for _, n := range c.nodes {
			if n != h {
				others = append(others, c.net.Host(n))
			}
		}
		name := fmt.Sprintf("cycle %d: cut %s (etcd leader %s)", i+1, h, leader)
		r, _, healed := c.faultReport(name, 5*time.Second, func() {
			for _, o := range others {
				if err := c.net.Partition(c.net.Host(h), o); err != nil {
					t.Error(err)
				}
			}
		}, func() {
			for _, o := range others {
				if err := c.net.Heal(c.net.Host(h), o); err != nil {
					t.Error(err)
				}
			}
		})
		if gap := r.OutageAfter(healed); gap != 0 {
			t.Errorf("%s: after the heal the address went unanswered for %v (every probe after a heal must be answered): %s\n%s", name, gap, r, c.agentLogs())
		}
		c.waitSettled()
	}
}

// moveEtcdLeader makes node's etcd member the leader, through etcd's API
// from the client host, as an operator with etcdctl would. A holder's
// agent gives the leadership away again within about a second, and etcd's
// MoveLeader waits until it sees the target lead, so the move can time out
// although it happened: it is tried until node is seen leading.
func (c *cluster) moveEtcdLeader(node string) {
	c.t.Helper()
	var errs []string
	for range 5 {
		if c.tryMoveEtcdLeader(node) {
			return
		}
		errs = append(errs, "leader "+c.etcdLeader())
	}
	c.t.Fatalf("could not make %s etcd's leader: %s", node, strings.Join(errs, "; "))
}

// tryMoveEtcdLeader asks the leader to move its leadership to node and
// reports whether node was seen leading within a few seconds.
func (c *cluster) tryMoveEtcdLeader(node string) bool {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var target uint64
	for _, n := range c.nodes {
		cli := c.etcdClient(n)
		list, err := cli.MemberList(ctx)
		if err != nil {
			c.t.Logf("etcd member list via %s: %v", n, err)
			return false
		}
		for _, m := range list.Members {
			if m.Name == node {
				target = m.ID
			}
		}
		// Only the leader may hand its leadership over.
		st, err := cli.Status(ctx, cli.Endpoints()[0])
		if err != nil || st.Leader != st.Header.MemberId {
			continue
		}
		if st.Leader == target {
			return true
		}
		go func() {
			// It returns once it sees node lead, or times out if node
			// gave the leadership away first; the poll below decides.
			_, _ = cli.MoveLeader(ctx, target)
		}()
		break
	}
	for ctx.Err() == nil {
		if c.etcdLeader() == node {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// etcdClient is a client of node's etcd member alone, dialled from the
// client host with the cluster's certificates, made once per node and
// closed when the test ends.
func (c *cluster) etcdClient(node string) *clientv3.Client {
	c.t.Helper()
	if cli, ok := c.etcd[node]; ok {
		return cli
	}
	certs := filepath.Join(c.dir, "certs")
	pair, err := tls.LoadX509KeyPair(filepath.Join(certs, node+".pem"), filepath.Join(certs, node+"-key.pem"))
	if err != nil {
		c.t.Fatal(err)
	}
	ca, err := os.ReadFile(filepath.Join(certs, "ca.pem"))
	if err != nil {
		c.t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	client := c.net.Host("client")
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"https://" + net.JoinHostPort(c.net.Host(node).Addr.String(), "2379")},
		DialTimeout: 5 * time.Second,
		TLS:         &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: roots, MinVersion: tls.VersionTLS12},
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return client.DialContext(ctx, "tcp", addr)
		})},
	})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cli.Close() })
	if c.etcd == nil {
		c.etcd = map[string]*clientv3.Client{}
	}
	c.etcd[node] = cli
	return cli
}
