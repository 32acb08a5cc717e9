package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/adminclient"
	"github.com/haven-ha/haven/internal/config"
)

// adminClient is the commands' client of the agents' admin API: it finds
// each node's admin address in haven.yaml and sends the admin token.
type adminClient struct {
	cfg    *config.Config
	token  string
	client *http.Client
}

// newAdminClient reads the configuration and the admin token it names:
// the write token, or the read token when the file names no write token.
// With admin.tls it speaks HTTPS and verifies the agents' certificates
// with the CA.
func newAdminClient(cfgPath string) (*adminClient, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	token, err := adminclient.Token(cfg)
	if err != nil {
		return nil, err
	}
	client, err := adminclient.HTTPClient(cfg, 10*time.Second)
	if err != nil {
		return nil, err
	}
	return &adminClient{cfg: cfg, token: token, client: client}, nil
}

// adminURL is the base URL of a node's admin API.
func (ac *adminClient) adminURL(node string) (string, error) {
	return adminclient.URL(ac.cfg, node)
}

// errUnreachable is wrapped by do's error when the request never reached
// the node's agent (it could not connect): only then may a caller ask
// another node to do what it asked, without risking doing it twice.
var errUnreachable = errors.New("unreachable")

// do sends a call to node's agent and decodes its answer into out (when
// out is not nil), within the client's timeout.
func (ac *adminClient) do(method, node, path string, out any) error {
	return ac.doContext(context.Background(), method, node, path, out)
}

func (ac *adminClient) doContext(ctx context.Context, method, node, path string, out any) error {
	return ac.send(ctx, method, node, path, nil, out)
}

// send is doContext with a JSON body (none when body is nil).
func (ac *adminClient) send(ctx context.Context, method, node, path string, body []byte, out any) error {
	base, err := ac.adminURL(node)
	if err != nil {
		return err
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if ac.token != "" {
		req.Header.Set("Authorization", "Bearer "+ac.token)
	}
	req.Header.Set("X-Haven-Operator", operator())
	resp, err := ac.client.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" && ctx.Err() == nil {
			// Nothing reached the agent: another node may be asked.
			return fmt.Errorf("node %s: %w (is its agent running?): %w", node, err, errUnreachable)
		}
		return fmt.Errorf("node %s: %w", node, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("node %s: read the answer: %w", node, err)
	}
	if resp.StatusCode >= 300 {
		msg := resp.Status + ": " + strings.TrimSpace(string(answer))
		var e struct{ Error string }
		if json.Unmarshal(answer, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return &refusedError{node: node, status: resp.StatusCode, msg: msg}
	}
	if out != nil {
		if err := json.Unmarshal(answer, out); err != nil {
			return fmt.Errorf("node %s: decode the answer to %s: %w", node, path, err)
		}
	}
	return nil
}

// refusedError is an agent's answer with an error status: the request
// reached it and it said no, with why.
type refusedError struct {
	node   string
	status int
	msg    string
}

func (e *refusedError) Error() string { return fmt.Sprintf("node %s: %s", e.node, e.msg) }

// defaultNodeTimeout is how long a status command waits for each node. An
// agent answers from memory in milliseconds (its status asks etcd's members
// for their health, each within 300ms): one silent for longer is frozen,
// overloaded or cut off, and the command shows the others' answers without
// waiting for it.
const defaultNodeTimeout = 500 * time.Millisecond

// nodeTimeoutFlag adds --node-timeout, the wait for each node's answer, to
// a command that shows status.
func nodeTimeoutFlag(fs *flag.FlagSet) *time.Duration {
	return fs.Duration("node-timeout", defaultNodeTimeout, "status: how long to wait for each node's answer; a node silent for longer is shown as such")
}

// outputFlag is a status command's -o: text (the tables) or json.
func outputFlag(fs *flag.FlagSet) *string {
	return fs.String("o", "text", "status: text or json (each node's answer as its agent gave it, for scripts)")
}

// checkOutput refuses an -o other than text or json.
func checkOutput(o string) error {
	if o != "text" && o != "json" {
		return fmt.Errorf("-o %q: give text or json", o)
	}
	return nil
}

// printJSONAnswers asks every node for path, as askEach does, and prints
// {"nodes": {NODE: ANSWER, ...}} with each answer as the agent sent it,
// or {"error": WHY} for a node that did not answer; extra adds keys beside
// "nodes". It fails, after printing, when a node did not answer, as the
// tables do; with anyAnswer, only when no node answered (haven dr
// status's table, whose point is a region that is down).
func printJSONAnswers(w io.Writer, ac *adminClient, nodes []string, path string, within time.Duration, extra map[string]any, anyAnswer bool) error {
	as := askEach[json.RawMessage](ac, nodes, path, within)
	out := map[string]any{}
	for k, v := range extra {
		out[k] = v
	}
	byNode := map[string]any{}
	for _, a := range as {
		if a.err != nil {
			byNode[a.node] = map[string]string{"error": noAnswer(a.err)}
			continue
		}
		byNode[a.node] = a.val
	}
	out["nodes"] = byNode
	if err := printJSON(w, out); err != nil {
		return err
	}
	if anyAnswer && slices.ContainsFunc(as, func(a answer[json.RawMessage]) bool { return a.err == nil }) {
		return nil
	}
	return answerErrors(as)
}

// silentError is a node that did not answer within the wait: the kernel of
// a frozen (SIGSTOPped, swapping, paused) machine still accepts the
// connection, and then nobody reads the request.
type silentError struct {
	node   string
	within time.Duration
}

func (e *silentError) Error() string {
	return fmt.Sprintf("node %s: no answer within %s", e.node, e.within)
}

// answer is what one node said to a read, decoded, or why it said nothing.
type answer[T any] struct {
	node string
	val  T
	err  error
}

// askEach sends GET path to every node at once, gives each within to
// answer, and returns the answers in the order of nodes: a silent node
// costs the wait once, not once per node, and holds nobody else's answer
// back.
func askEach[T any](ac *adminClient, nodes []string, path string, within time.Duration) []answer[T] {
	out := make([]answer[T], len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), within)
			defer cancel()
			a := answer[T]{node: n}
			a.err = ac.doContext(ctx, "GET", n, path, &a.val)
			if a.err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
				a.err = &silentError{node: n, within: within}
			}
			out[i] = a
		})
	}
	wg.Wait()
	return out
}

// answerErrors joins the errors of the nodes that did not answer.
func answerErrors[T any](as []answer[T]) error {
	var errs []error
	for _, a := range as {
		errs = append(errs, a.err)
	}
	return errors.Join(errs...)
}

// noAnswer says why a node did not answer, for a table's cell or a line
// of its own: "no answer within 500ms", or "unreachable: ..." with the
// error.
func noAnswer(err error) string {
	if s, ok := errors.AsType[*silentError](err); ok {
		return fmt.Sprintf("no answer within %s", s.within)
	}
	return "unreachable: " + err.Error()
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

// operator names who runs the command, for the records an action leaves
// (an operator's drain says who set it): the user behind sudo, else the
// user, at this machine's host name.
func operator() string {
	who := os.Getenv("SUDO_USER")
	if who == "" {
		who = os.Getenv("USER")
	}
	if who == "" {
		if u, err := user.Current(); err == nil {
			who = u.Username
		} else {
			who = "uid" + strconv.Itoa(os.Getuid())
		}
	}
	host, err := os.Hostname()
	if err != nil {
		host = "unknown host"
	}
	return who + "@" + host
}

// askFirst sends POST path to the first of nodes that answers. Only a node
// that could not be reached is passed over: one that took the request and
// failed is not asked again elsewhere, which could do it twice.
func askFirst(ac *adminClient, nodes []string, path string, out any) error {
	_, err := askNodes(ac, nodes, "POST", path, out, false)
	return err
}

// askAny is askFirst for calls that may be asked again of another node
// when one is not connected to etcd yet (503: it did nothing, and what
// these calls do through etcd is the same from any node). It returns the
// node that answered.
func askAny(ac *adminClient, nodes []string, method, path string, out any) (string, error) {
	return askNodes(ac, nodes, method, path, out, true)
}

func askNodes(ac *adminClient, nodes []string, method, path string, out any, passUnavailable bool) (string, error) {
	var errs []error
	for _, n := range nodes {
		err := ac.do(method, n, path, out)
		if err == nil {
			return n, nil
		}
		errs = append(errs, err)
		refused, isRefused := errors.AsType[*refusedError](err)
		if !errors.Is(err, errUnreachable) && !(passUnavailable && isRefused && refused.status == http.StatusServiceUnavailable) {
			break
		}
	}
	return "", errors.Join(errs...)
}
