package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
)

// cluster is a local Redis Cluster the bench started: every node a
// redis-server of its own (no persistence, a temporary directory each),
// stopped by pid.
type cluster struct {
	nodes   []*server
	masters []clusterMaster // in order of their first slot
	replica []string        // the replicas' addresses
}

// clusterMaster is one master of a cluster and the slots it serves.
type clusterMaster struct {
	addr   string
	ranges []keys.SlotRange
}

// nodeTimeout is the cluster-node-timeout of the bench's clusters: small,
// so that a failover (not measured here) would not wait long, but not so
// small that a node starved of CPU on a loaded machine is marked failed
// (with 2 s, a cluster without replicas went down between two runs on
// this 2-core machine at load average 14).
const nodeTimeout = 5 * time.Second

// startCluster starts masters*(1+replicas) cluster-enabled redis-servers on
// free loopback ports (a port p and its bus port p+10000 both free, each
// node checked with PING), joins them with `redis-cli --cluster create`
// and waits until every node sees the whole cluster: cluster_state:ok,
// every node known, every replica known as one, and each replica's link to
// its master up. On an error the nodes started so far are stopped.
func startCluster(ctx context.Context, masters, replicas int, progress func(string)) (*cluster, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found: %w", err)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, fmt.Errorf("redis-cli not found (it creates the cluster): %w", err)
	}
	c := &cluster{}
	ok := false
	defer func() {
		if !ok {
			c.stop()
		}
	}()
	total := masters * (1 + replicas)
	var ports []int
	for len(c.nodes) < total {
		p, err := clusterPort(ports)
		if err != nil {
			return nil, err
		}
		s, err := startNode(bin, p)
		if err != nil {
			// Someone took the port meanwhile: try another.
			if len(ports) > 3*total {
				return nil, err
			}
			ports = append(ports, p)
			continue
		}
		ports = append(ports, p)
		c.nodes = append(c.nodes, s)
	}
	args := []string{"--cluster", "create"}
	for _, s := range c.nodes {
		args = append(args, s.addr)
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	out, err := exec.CommandContext(cctx, cli, args...).CombinedOutput()
	cancel()
	if err != nil {
		return nil, fmt.Errorf("redis-cli --cluster create: %v: %s", err, lastLines(string(out), 5))
	}
	progress(fmt.Sprintf("cluster of %d masters and %d replicas created; waiting for every node to see it whole", masters, masters*replicas))
	deadline := time.Now().Add(90 * time.Second)
	for _, s := range c.nodes {
		rdb := redis.NewClient(&redis.Options{Addr: s.addr})
		for {
			why := nodeReady(ctx, rdb, total, masters*replicas)
			if why == "" {
				break
			}
			if time.Now().After(deadline) {
				_ = rdb.Close()
				return nil, fmt.Errorf("cluster node %s not ready within 90 s: %s", s.addr, why)
			}
			time.Sleep(100 * time.Millisecond)
		}
		_ = rdb.Close()
	}
	if err := c.readSlots(ctx); err != nil {
		return nil, err
	}
	if len(c.masters) != masters {
		return nil, fmt.Errorf("the cluster has %d masters serving slots, want %d", len(c.masters), masters)
	}
	ok = true
	return c, nil
}

// clusterPort returns a loopback port p such that p and p+10000 (the
// cluster bus) are free now and clash with none of taken (nor their bus
// ports).
func clusterPort(taken []int) (int, error) {
	free := func(p int) bool {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			return false
		}
		_ = l.Close()
		return true
	}
	for range 200 {
		p := 20000 + rand.IntN(30000)
		if slices.ContainsFunc(taken, func(q int) bool { return p == q || p == q+10000 || p+10000 == q }) {
			continue
		}
		if free(p) && free(p+10000) {
			return p, nil
		}
	}
	return 0, errors.New("no free pair of loopback ports (p, p+10000) found")
}

// startNode starts one cluster-enabled redis-server on port and waits until
// it answers PING.
func startNode(bin string, port int) (*server, error) {
	dir, err := os.MkdirTemp("", "async-bench-cluster-")
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "redis.log"))
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	cmd := exec.Command(bin,
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(port),
		"--cluster-enabled", "yes",
		"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
		"--cluster-node-timeout", strconv.Itoa(int(nodeTimeout/time.Millisecond)),
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--daemonize", "no",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C reaches the bench only
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	s := &server{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(s.done)
	}()
	rdb := redis.NewClient(&redis.Options{Addr: s.addr, MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return s, nil
		}
		select {
		case <-s.done:
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("redis-server on port %d exited at start: %s", port, lastLines(string(log), 5))
		default:
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("redis-server on port %d did not answer PING: %w", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nodeReady returns "" when the node sees the cluster whole, else why not.
func nodeReady(ctx context.Context, rdb *redis.Client, total, replicas int) string {
	info, err := rdb.ClusterInfo(ctx).Result()
	if err != nil {
		return err.Error()
	}
	if !strings.Contains(info, "cluster_state:ok") {
		return "cluster_state is not ok"
	}
	if !strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(total)+"\r") {
		return "not every node known"
	}
	nodes, err := rdb.ClusterNodes(ctx).Result()
	if err != nil {
		return err.Error()
	}
	n := 0
	for _, line := range strings.Split(nodes, "\n") {
		if f := strings.Fields(line); len(f) > 2 && strings.Contains(f[2], "slave") {
			n++
		}
	}
	if n != replicas {
		return fmt.Sprintf("%d replicas known, want %d", n, replicas)
	}
	repl, err := rdb.Info(ctx, "replication").Result()
	if err != nil {
		return err.Error()
	}
	if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
		return "the replica's link to its master is not up"
	}
	return ""
}

// readSlots reads CLUSTER SLOTS and sets c.masters (by first slot) and
// c.replica.
func (c *cluster) readSlots(ctx context.Context) error {
	rdb := redis.NewClient(&redis.Options{Addr: c.nodes[0].addr})
	defer rdb.Close()
	slots, err := rdb.ClusterSlots(ctx).Result()
	if err != nil {
		return fmt.Errorf("CLUSTER SLOTS: %w", err)
	}
	by := map[string]*clusterMaster{}
	reps := map[string]bool{}
	for _, s := range slots {
		if len(s.Nodes) == 0 {
			return fmt.Errorf("CLUSTER SLOTS: slots %d-%d have no node", s.Start, s.End)
		}
		a := s.Nodes[0].Addr
		m := by[a]
		if m == nil {
			m = &clusterMaster{addr: a}
			by[a] = m
		}
		m.ranges = append(m.ranges, keys.SlotRange{Start: s.Start, End: s.End})
		for _, r := range s.Nodes[1:] {
			reps[r.Addr] = true
		}
	}
	c.masters = c.masters[:0]
	for _, m := range by {
		slices.SortFunc(m.ranges, func(a, b keys.SlotRange) int { return a.Start - b.Start })
		c.masters = append(c.masters, *m)
	}
	slices.SortFunc(c.masters, func(a, b clusterMaster) int { return a.ranges[0].Start - b.ranges[0].Start })
	c.replica = c.replica[:0]
	for a := range reps {
		c.replica = append(c.replica, a)
	}
	slices.Sort(c.replica)
	return nil
}

// masterOf returns the index in c.masters of the master serving slot, or -1.
func (c *cluster) masterOf(slot int) int {
	return slices.IndexFunc(c.masters, func(m clusterMaster) bool {
		return slices.ContainsFunc(m.ranges, func(r keys.SlotRange) bool { return slot >= r.Start && slot <= r.End })
	})
}

// addrs returns every node's address.
func (c *cluster) addrs() []string {
	out := make([]string, len(c.nodes))
	for i, s := range c.nodes {
		out[i] = s.addr
	}
	return out
}

// pids returns every node's pid, for the progress line.
func (c *cluster) pids() []int {
	out := make([]int, len(c.nodes))
	for i, s := range c.nodes {
		out[i] = s.cmd.Process.Pid
	}
	return out
}

// stop stops every node by its pid. Safe to call more than once.
func (c *cluster) stop() {
	if c == nil {
		return
	}
	for _, s := range c.nodes {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, s := range c.nodes {
		s.stop() // waits for the exit (SIGKILL after 5 s) and removes the directory
	}
}

// waitOK waits up to a minute until every node reports cluster_state:ok.
func (c *cluster) waitOK(ctx context.Context) error {
	deadline := time.Now().Add(time.Minute)
	for _, s := range c.nodes {
		rdb := redis.NewClient(&redis.Options{Addr: s.addr})
		for {
			info, err := rdb.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				_ = rdb.Close()
				return fmt.Errorf("cluster node %s: cluster_state not ok for a minute (%v)", s.addr, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		_ = rdb.Close()
	}
	return nil
}

// flush waits for the cluster to be whole (waitOK) and empties every
// master (FLUSHALL; the replicas follow).
func (c *cluster) flush(ctx context.Context) error {
	if err := c.waitOK(ctx); err != nil {
		return err
	}
	for _, m := range c.masters {
		rdb := redis.NewClient(&redis.Options{Addr: m.addr})
		err := rdb.FlushAll(ctx).Err()
		_ = rdb.Close()
		if err != nil {
			return fmt.Errorf("FLUSHALL on %s: %w", m.addr, err)
		}
	}
	return nil
}
