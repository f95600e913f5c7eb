package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterConfig is the shape of a Redis Cluster StartCluster makes.
type ClusterConfig struct {
	// Masters is how many masters share the 16384 slots. Defaults to 3.
	Masters int
	// Replicas is how many replicas each master has. Defaults to 1.
	Replicas int
	// NodeTimeout is cluster-node-timeout: how long a node may not answer
	// before the others count it as failing (a replica takes over about
	// twice this after its master stopped). Defaults to 1.5s.
	NodeTimeout time.Duration
	// Args are more redis-server arguments for every node.
	Args []string
}

// Cluster is a Redis Cluster of a test's own (StartCluster): real
// redis-server processes on free loopback ports, which the test may kill
// (a failover) without disturbing other tests, as it would on the shared
// cluster of ASYNC_REDIS_CLUSTER.
type Cluster struct {
	Nodes []*ClusterNode // masters first, then replicas, as started

	cfg ClusterConfig
}

// ClusterNode is one redis-server of a Cluster.
type ClusterNode struct {
	Addr string // 127.0.0.1:port
	ID   string // its cluster node id
	// Master is the node it replicated when the cluster was made; nil for
	// a master.
	Master *ClusterNode

	bus  int // its cluster bus port
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	rdb  *redis.Client // a client of this node alone
}

// StartCluster starts a Redis Cluster for t: cfg.Masters masters holding
// every slot and cfg.Replicas replicas of each, every node with a data
// directory of its own and no persistence; it returns once every node sees
// the cluster whole (state ok, every node known, every replica in sync).
// The processes are stopped (SIGKILL, by pid) at the end of t. It skips t
// when redis-server is not installed.
func StartCluster(t testing.TB, cfg ClusterConfig) *Cluster {
	t.Helper()
	if cfg.Masters == 0 {
		cfg.Masters = 3
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.NodeTimeout == 0 {
		cfg.NodeTimeout = 1500 * time.Millisecond
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skipf("redis-server is not installed (%v): a cluster of the test's own cannot be started", err)
	}
	c := &Cluster{cfg: cfg}
	n := cfg.Masters * (1 + cfg.Replicas)
	for i := 0; i < n; i++ {
		c.Nodes = append(c.Nodes, c.startNode(t, bin, i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.form(ctx); err != nil {
		t.Fatalf("form the cluster: %v", err)
	}
	return c
}

// startNode starts node i on free ports (a new pair when the first was
// taken meanwhile) and waits until it answers PING.
func (c *Cluster) startNode(t testing.TB, bin string, i int) *ClusterNode {
	t.Helper()
	var last error
	for try := 0; try < 5; try++ {
		port, bus := freePort(t), freePort(t)
		if port == bus {
			continue
		}
		dir := filepath.Join(t.TempDir(), fmt.Sprintf("node%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		args := []string{"--port", strconv.Itoa(port), "--cluster-port", strconv.Itoa(bus),
			"--bind", "127.0.0.1", "--dir", dir, "--logfile", filepath.Join(dir, "log"),
			"--save", "", "--appendonly", "no",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.FormatInt(c.cfg.NodeTimeout.Milliseconds(), 10),
			// A replica takes over however long it was cut off (a test
			// kills masters on purpose), and syncs without waiting for
			// more replicas to join the transfer.
			"--cluster-replica-validity-factor", "0",
			"--repl-diskless-sync-delay", "0"}
		cmd := exec.Command(bin, append(args, c.cfg.Args...)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		node := &ClusterNode{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), bus: bus, cmd: cmd, done: make(chan struct{})}
		go func() {
			_ = cmd.Wait()
			close(node.done)
		}()
		t.Cleanup(node.kill)
		node.rdb = redis.NewClient(&redis.Options{Addr: node.Addr, MaxRetries: -1, DialTimeout: time.Second})
		t.Cleanup(func() { _ = node.rdb.Close() })
		if last = node.awaitPing(10 * time.Second); last == nil {
			return node
		}
		node.kill() // perhaps its port was taken: try others
	}
	t.Fatalf("start cluster node %d: %v", i, last)
	return nil
}

// freePort returns a loopback port nothing listened on a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// awaitPing waits until the node answers PING, or it exited, or timeout.
func (n *ClusterNode) awaitPing(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := n.rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-n.done:
			return fmt.Errorf("redis-server at %s exited at start (%v)", n.Addr, err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server at %s did not answer PING within %v: %v", n.Addr, timeout, err)
		}
	}
}

// kill stops the node's process with SIGKILL and waits for it to exit.
func (n *ClusterNode) kill() {
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Kill()
	<-n.done
}

// Alive reports whether the node's process is running.
func (n *ClusterNode) Alive() bool {
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Client is a client of this node alone (no redirections followed).
func (n *ClusterNode) Client() *redis.Client { return n.rdb }

// form joins the nodes: distinct config epochs, slots in equal ranges to
// the masters, MEET, REPLICATE, and waits until every node sees it whole.
func (c *Cluster) form(ctx context.Context) error {
	for i, n := range c.Nodes {
		id, err := n.rdb.Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER MYID: %w", n.Addr, err)
		}
		n.ID = id
		if err := n.rdb.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err(); err != nil {
			return fmt.Errorf("%s: CLUSTER SET-CONFIG-EPOCH: %w", n.Addr, err)
		}
	}
	m := c.cfg.Masters
	for i := 0; i < m; i++ {
		from, to := i*16384/m, (i+1)*16384/m-1
		if err := c.Nodes[i].rdb.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", from, to).Err(); err != nil {
			return fmt.Errorf("%s: CLUSTER ADDSLOTSRANGE %d %d: %w", c.Nodes[i].Addr, from, to, err)
		}
	}
	first := c.Nodes[0]
	host, port, _ := net.SplitHostPort(first.Addr)
	for _, n := range c.Nodes[1:] {
		if err := n.rdb.Do(ctx, "CLUSTER", "MEET", host, port, first.bus).Err(); err != nil {
			return fmt.Errorf("%s: CLUSTER MEET: %w", n.Addr, err)
		}
	}
	if err := c.poll(ctx, "every node to know every other", func(n *ClusterNode) error {
		nodes, err := n.rdb.ClusterNodes(ctx).Result()
		if err != nil {
			return err
		}
		known := 0
		for _, line := range strings.Split(strings.TrimSpace(nodes), "\n") {
			if f := strings.Fields(line); len(f) > 2 && !strings.Contains(f[2], "handshake") && !strings.Contains(f[2], "noaddr") {
				known++
			}
		}
		if known != len(c.Nodes) {
			return fmt.Errorf("knows %d of %d nodes", known, len(c.Nodes))
		}
		return nil
	}); err != nil {
		return err
	}
	for j, n := range c.Nodes[m:] {
		n.Master = c.Nodes[j%m]
		if err := n.rdb.Do(ctx, "CLUSTER", "REPLICATE", n.Master.ID).Err(); err != nil {
			return fmt.Errorf("%s: CLUSTER REPLICATE %s: %w", n.Addr, n.Master.ID, err)
		}
	}
	return c.poll(ctx, "the cluster to be whole", func(n *ClusterNode) error {
		return c.whole(ctx, n)
	})
}

// whole checks that n sees the cluster whole: state ok, as many replicas
// as were made, and (if n is a replica now) its link to its master up.
func (c *Cluster) whole(ctx context.Context, n *ClusterNode) error {
	info, err := n.rdb.ClusterInfo(ctx).Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "cluster_state:ok") {
		return fmt.Errorf("cluster_state is not ok")
	}
	nodes, err := n.rdb.ClusterNodes(ctx).Result()
	if err != nil {
		return err
	}
	replicas := 0
	for _, line := range strings.Split(strings.TrimSpace(nodes), "\n") {
		if f := strings.Fields(line); len(f) > 2 && strings.Contains(f[2], "slave") && !strings.Contains(f[2], "fail") {
			replicas++
		}
	}
	if want := c.cfg.Masters * c.cfg.Replicas; replicas != want {
		return fmt.Errorf("sees %d replicas of %d", replicas, want)
	}
	repl, err := n.rdb.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
		return fmt.Errorf("its link to its master is not up")
	}
	return nil
}

// poll checks every live node with check until all pass, or ctx ends.
func (c *Cluster) poll(ctx context.Context, what string, check func(n *ClusterNode) error) error {
	for {
		var err error
		for _, n := range c.Nodes {
			if !n.Alive() {
				continue
			}
			if e := check(n); e != nil {
				err = fmt.Errorf("%s: %w", n.Addr, e)
				break
			}
		}
		if err == nil {
			return nil
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for %s: %w (last: %v)", what, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// Addrs are the addresses of every node, for redis.ClusterOptions.Addrs.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// NewClient returns a cluster client of c (opts may set more; Addrs is
// filled in), closed at the end of t.
func (c *Cluster) NewClient(t testing.TB, opts *redis.ClusterOptions) *redis.ClusterClient {
	o := redis.ClusterOptions{}
	if opts != nil {
		o = *opts
	}
	o.Addrs = c.Addrs()
	rdb := redis.NewClusterClient(&o)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// MasterOf returns the node that serves key's slot now, as a live node's
// CLUSTER SLOTS says.
func (c *Cluster) MasterOf(ctx context.Context, key string) (*ClusterNode, error) {
	for _, n := range c.Nodes {
		if !n.Alive() {
			continue
		}
		slot, err := n.rdb.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			return nil, err
		}
		slots, err := n.rdb.ClusterSlots(ctx).Result()
		if err != nil {
			return nil, err
		}
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
				for _, m := range c.Nodes {
					if m.Addr == s.Nodes[0].Addr {
						return m, nil
					}
				}
			}
		}
		return nil, fmt.Errorf("no node serves slot %d of %q", slot, key)
	}
	return nil, fmt.Errorf("no node is alive")
}

// Restart starts node n again (after Kill), on its ports and with its data
// directory: its nodes.conf makes it rejoin the cluster, as a replica of
// the node that took its slots over. It waits until it answers PING.
func (c *Cluster) Restart(t testing.TB, n *ClusterNode) {
	t.Helper()
	n.kill()
	cmd := exec.Command(n.cmd.Path, n.cmd.Args[1:]...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	n.cmd, n.done = cmd, done
	if err := n.awaitPing(10 * time.Second); err != nil {
		t.Fatalf("restart %s: %v", n.Addr, err)
	}
}

// AwaitWhole waits, within ctx, until every live node sees the cluster
// whole again (as StartCluster does: state ok, as many replicas as were
// made, each in sync): after a Restart, say.
func (c *Cluster) AwaitWhole(ctx context.Context) error {
	return c.poll(ctx, "the cluster to be whole", func(n *ClusterNode) error {
		return c.whole(ctx, n)
	})
}

// Freeze stops node n's process with SIGSTOP (by pid): it neither answers
// nor reads what it was sent until Thaw. Keep it short of NodeTimeout, or
// the other nodes count it as failing.
func (c *Cluster) Freeze(n *ClusterNode) error { return n.cmd.Process.Signal(syscall.SIGSTOP) }

// Thaw resumes a node Freeze stopped (SIGCONT).
func (c *Cluster) Thaw(n *ClusterNode) error { return n.cmd.Process.Signal(syscall.SIGCONT) }

// Kill stops node n with SIGKILL (no shutdown, nothing saved), by its pid,
// and waits until its process has exited.
func (c *Cluster) Kill(n *ClusterNode) { n.kill() }

// AwaitFailover waits, within ctx, until the replica made of the master
// dead (which Kill stopped) serves in its place: it is a master, and every
// live node says cluster_state:ok and names no dead node as the master of
// a slot. It returns the promoted node.
func (c *Cluster) AwaitFailover(ctx context.Context, dead *ClusterNode) (*ClusterNode, error) {
	var promoted *ClusterNode
	err := c.poll(ctx, "a replica of "+dead.Addr+" to take over", func(n *ClusterNode) error {
		if promoted == nil {
			for _, r := range c.Nodes {
				if r.Master != dead || !r.Alive() {
					continue
				}
				repl, err := r.rdb.Info(ctx, "replication").Result()
				if err == nil && strings.Contains(repl, "role:master") {
					promoted = r
				}
			}
			if promoted == nil {
				return fmt.Errorf("no replica of %s is a master yet", dead.Addr)
			}
		}
		info, err := n.rdb.ClusterInfo(ctx).Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("cluster_state is not ok")
		}
		slots, err := n.rdb.ClusterSlots(ctx).Result()
		if err != nil {
			return err
		}
		covered := 0
		for _, s := range slots {
			if len(s.Nodes) == 0 {
				continue
			}
			for _, d := range c.Nodes {
				if !d.Alive() && d.Addr == s.Nodes[0].Addr {
					return fmt.Errorf("still names %s the master of slots %d-%d", d.Addr, s.Start, s.End)
				}
			}
			covered += int(s.End-s.Start) + 1
		}
		if covered != 16384 {
			return fmt.Errorf("covers %d slots of 16384", covered)
		}
		return nil
	})
	return promoted, err
}
