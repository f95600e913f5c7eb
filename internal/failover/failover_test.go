package failover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Job is a task that names itself, so that the handler can tell which
// enqueue it came from.
type Job struct{ ID string }

func (Job) Kind() string { return "failover-job" }

// tally is what the producers of one variant saw.
type tally struct {
	mu      sync.Mutex
	acked   map[string]string // id -> its shard: the enqueue returned no error
	short   map[string]bool   // ErrNotReplicated: added, replicas did not confirm
	failed  int               // any other error: maybe added
	ackedOn map[string]int    // acks per shard since after was set
	shortOn map[string]int    // ErrNotReplicated per shard since after was set
	after   bool
	lastErr error
}

func newTally() *tally {
	return &tally{acked: map[string]string{}, short: map[string]bool{}, ackedOn: map[string]int{}, shortOn: map[string]int{}}
}

func (t *tally) record(id string, h *client.Handle, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case err == nil:
		q, _, _ := keys.SplitTaskID(h.ID())
		t.acked[id] = q
		if t.after {
			t.ackedOn[q]++
		}
	case errors.Is(err, client.ErrNotReplicated):
		t.short[id] = true
		if t.after && h != nil {
			q, _, _ := keys.SplitTaskID(h.ID())
			t.shortOn[q]++
		}
	default:
		t.failed++
		t.lastErr = err
	}
}

func (t *tally) ackedCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.acked)
}

// produce enqueues tasks of c to queue until stop is closed: Enqueue from
// three goroutines, EnqueueMany of 8 from a fourth, each task with an id
// of its own.
func produce(ctx context.Context, wg *sync.WaitGroup, stop <-chan struct{}, c *client.Client, queue, prefix string, tl *tally) {
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				if g < 3 {
					id := fmt.Sprintf("%s-%d-%d", prefix, g, i)
					h, err := c.Enqueue(cctx, Job{ID: id}, &client.EnqueueOpts{Queue: queue, ID: id})
					tl.record(id, h, err)
				} else {
					specs := make([]client.Spec, 8)
					ids := make([]string, 8)
					for j := range specs {
						ids[j] = fmt.Sprintf("%s-%d-%d-%d", prefix, g, i, j)
						specs[j] = client.Spec{Args: Job{ID: ids[j]}, Opts: &client.EnqueueOpts{Queue: queue, ID: ids[j]}}
					}
					hs, err := c.EnqueueMany(cctx, specs)
					for j, id := range ids {
						var h *client.Handle
						if j < len(hs) {
							h = hs[j]
						}
						if err == nil || h != nil {
							tl.record(id, h, err)
						} else {
							tl.record(id, nil, err)
						}
					}
				}
				cancel()
			}
		}()
	}
}

// A master of a 3-master cluster with a replica each is killed (SIGKILL)
// while producers enqueue to two 6-shard queues, one with durable enqueue
// (WaitReplicas 1) and one without, and workers run their tasks; its
// replica is behind at the kill (frozen, its link dropped, for up to
// 300 ms before). Once the replica took over, every task whose durable
// enqueue returned no error runs (or is still in Redis): none is lost.
// Durable enqueues to the promoted master's shards answer ErrNotReplicated
// (it has no replica) until the killed node, restarted, rejoins as its
// replica; then they are confirmed again. How many acknowledged tasks of
// the queue without the option were lost is logged, not asserted: that is
// what asynchronous replication may lose (the tasks the master
// acknowledged after the replica's last copy).
func TestDurableEnqueueSurvivesFailover(t *testing.T) {
	cl := testenv.StartCluster(t, testenv.ClusterConfig{Masters: 3, Replicas: 1, NodeTimeout: 1500 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	opts := &redis.ClusterOptions{ContextTimeoutEnabled: true}
	durable, err := client.New(ctx, cl.NewClient(t, opts), &client.Config{Logger: quiet, WaitReplicas: 1, WaitTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer durable.Close()
	plain, err := client.New(ctx, cl.NewClient(t, opts), &client.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	qd, qp := "fo-durable", "fo-plain"
	shardsD, err := durable.DeclareShards(ctx, qd, 6)
	if err != nil {
		t.Fatal(err)
	}
	shardsP, err := plain.DeclareShards(ctx, qp, 6)
	if err != nil {
		t.Fatal(err)
	}

	var ran sync.Map // id -> *atomic.Int32, runs
	w, err := worker.New(ctx, cl.NewClient(t, opts), &worker.Config{
		Queues: map[string]int{qd: 1, qp: 1}, Concurrency: 16, Lease: 3 * time.Second,
		BlockTimeout: 200 * time.Millisecond, Logger: quiet,
		Backoff: func(int) time.Duration { return 50 * time.Millisecond },
	})
	if err != nil {
		t.Fatal(err)
	}
	worker.Handle(w, func(ctx context.Context, j Job) (struct{}, error) {
		v, _ := ran.LoadOrStore(j.ID, new(atomic.Int32))
		v.(*atomic.Int32).Add(1)
		return struct{}{}, nil
	})
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		if err := w.Stop(sctx); err != nil {
			t.Errorf("stop the worker: %v", err)
		}
	}()

	td, tp := newTally(), newTally()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	produce(ctx, &wg, stop, durable, qd, "d", td)
	produce(ctx, &wg, stop, plain, qp, "p", tp)
	stopped := false
	stopProducers := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer stopProducers()

	testenv.Eventually(t, 30*time.Second, "both producers to have 400 tasks acknowledged", func() bool {
		return td.ackedCount() >= 400 && tp.ackedCount() >= 400
	})
	rateD := float64(td.ackedCount()) / time.Since(start).Seconds()
	rateP := float64(tp.ackedCount()) / time.Since(start).Seconds()

	// The victim: the master of the durable queue's first shard.
	victim, err := cl.MasterOf(ctx, keys.ForQueue(shardsD[0]).Stream())
	if err != nil {
		t.Fatal(err)
	}
	// A replica behind its master: the victim's replica is frozen
	// (SIGSTOP) and the victim drops its link, so that it cannot come
	// back, and the producers go on for a moment before the kill, as they
	// would while a replica across a network lags. What the master
	// acknowledged meanwhile is on no replica: a plain enqueue's task is
	// lost with the master, a durable one's WAIT cannot be satisfied
	// (ErrNotReplicated). The replica is thawed at the kill, well within
	// the node timeout.
	var replica *testenv.ClusterNode
	for _, n := range cl.Nodes {
		if n.Master == victim {
			replica = n
		}
	}
	if replica == nil {
		t.Fatalf("no replica of %s", victim.Addr)
	}
	victimShards := map[string]bool{}
	for _, s := range append(slices.Clone(shardsD), shardsP...) {
		if m, err := cl.MasterOf(ctx, keys.ForQueue(s).Stream()); err == nil && m == victim {
			victimShards[s] = true
		}
	}
	onVictim := func(tl *tally) int {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		n := 0
		for _, q := range tl.acked {
			if victimShards[q] {
				n++
			}
		}
		return n
	}
	if err := cl.Freeze(replica); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			if err := cl.Thaw(replica); err != nil {
				t.Errorf("thaw %s: %v", replica.Addr, err)
			}
		}
	}
	defer thaw()
	before := onVictim(tp)
	if err := victim.Client().Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	for onVictim(tp)-before < 20 && time.Since(cutAt) < 300*time.Millisecond {
		select { // poll
		case <-ctx.Done():
		case <-time.After(5 * time.Millisecond):
		}
	}
	cutAcks := onVictim(tp) - before
	killedAt := time.Now()
	t.Logf("%v: killing %s, %v after it dropped its replica's link (%d plain tasks acknowledged on its shards meanwhile)",
		time.Since(start), victim.Addr, killedAt.Sub(cutAt).Round(time.Millisecond), cutAcks)
	cl.Kill(victim)
	thaw()
	promoted, err := cl.AwaitFailover(ctx, victim)
	if err != nil {
		t.Fatal(err)
	}
	failover := time.Since(killedAt)
	t.Logf("%v: %s took over", time.Since(start), promoted.Addr)
	var onPromoted []string // the durable queue's shards the promoted replica serves
	for _, s := range shardsD {
		if m, err := cl.MasterOf(ctx, keys.ForQueue(s).Stream()); err == nil && m == promoted {
			onPromoted = append(onPromoted, s)
		}
	}
	if len(onPromoted) == 0 {
		t.Fatalf("the promoted replica %s serves none of the durable queue's shards", promoted.Addr)
	}
	for _, tl := range []*tally{td, tp} {
		tl.mu.Lock()
		tl.after = true
		tl.mu.Unlock()
	}
	// Durable enqueues reach the promoted master again.
	// The promoted master has no replica (its master is dead): durable
	// enqueues to its shards reach it, are added, and answer
	// ErrNotReplicated.
	on := func(m map[string]int) int {
		td.mu.Lock()
		defer td.mu.Unlock()
		n := 0
		for _, s := range onPromoted {
			n += m[s]
		}
		return n
	}
	awaitCount(ctx, t, 20*time.Second, "durable enqueues to the promoted master's shards answering ErrNotReplicated", func() int { return on(td.shortOn) }, 5, td)
	// The killed master, started again, rejoins as the promoted one's
	// replica; durable enqueues to those shards are confirmed again.
	t.Logf("%v: restarting %s", time.Since(start), victim.Addr)
	cl.Restart(t, victim)
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := cl.AwaitWhole(wctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%v: the cluster is whole", time.Since(start))
	td.mu.Lock()
	clear(td.ackedOn)
	td.mu.Unlock()
	awaitCount(ctx, t, 20*time.Second, "durable enqueues confirmed on the promoted master's shards once it has a replica again", func() int { return on(td.ackedOn) }, 20, td)
	stopProducers()

	// Every durable-acknowledged task runs; give those delivered to a
	// consumer on the dead master a lease to be taken over.
	hasRun := func(id string) bool {
		v, ok := ran.Load(id)
		return ok && v.(*atomic.Int32).Load() > 0
	}
	missing := func(tl *tally) []string {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		var out []string
		for id := range tl.acked {
			if !hasRun(id) {
				out = append(out, id)
			}
		}
		slices.Sort(out)
		return out
	}
	deadline := time.Now().Add(25 * time.Second)
	for len(missing(td)) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		select { // poll
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	// What has not run: still in Redis (it will run), or lost.
	lostOf := func(tl *tally, c *client.Client) (lost, there []string) {
		for _, id := range missing(tl) {
			tl.mu.Lock()
			q := tl.acked[id]
			tl.mu.Unlock()
			h, err := c.Task(keys.TaskID(q, id))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := h.State(ctx); errors.Is(err, client.ErrNotFound) {
				lost = append(lost, id)
			} else {
				there = append(there, id)
			}
		}
		return lost, there
	}
	lostD, thereD := lostOf(td, durable)
	// The plain queue's tasks have had the same time to run.
	lostP, thereP := lostOf(tp, plain)
	twice := 0
	ran.Range(func(_, v any) bool {
		if v.(*atomic.Int32).Load() > 1 {
			twice++
		}
		return true
	})
	td.mu.Lock()
	tp.mu.Lock()
	t.Logf("killed master %s; replica %s took over in %v (cluster-node-timeout 1.5s)", victim.Addr, promoted.Addr, failover.Round(time.Millisecond))
	t.Logf("before the kill: durable %.0f tasks/s acknowledged, plain %.0f tasks/s (4 producers each, -race build, shared CPU)", rateD, rateP)
	t.Logf("durable (WaitReplicas 1): %d acknowledged, %d lost, %d not yet run but in Redis; %d added but not confirmed (ErrNotReplicated); %d failed (last: %v)",
		len(td.acked), len(lostD), len(thereD), len(td.short), td.failed, td.lastErr)
	t.Logf("plain (no WaitReplicas): %d acknowledged, %d LOST in the failover %v, %d not yet run but in Redis; %d failed (last: %v)",
		len(tp.acked), len(lostP), head(lostP), len(thereP), tp.failed, tp.lastErr)
	t.Logf("tasks run more than once (redelivered after the failover): %d; go-redis log lines (failed dials to the dead master) %d", twice, goRedisLines.n.Load())
	td.mu.Unlock()
	tp.mu.Unlock()
	if len(lostD) > 0 {
		t.Fatalf("%d tasks acknowledged by a durable enqueue were lost in the failover: %v", len(lostD), head(lostD))
	}
}

// awaitCount polls count until it reaches want, or fails t after timeout
// with what tl saw.
func awaitCount(ctx context.Context, t *testing.T, timeout time.Duration, what string, count func() int, want int, tl *tally) {
	t.Helper()
	until := time.Now().Add(timeout)
	for {
		n := count()
		if n >= want {
			return
		}
		if time.Now().After(until) {
			tl.mu.Lock()
			defer tl.mu.Unlock()
			t.Fatalf("%s: %d of %d after %v; acks per shard %v, ErrNotReplicated per shard %v; last error %v", what, n, want, timeout, tl.ackedOn, tl.shortOn, tl.lastErr)
		}
		select { // poll
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// head is the first few of ids, for a message.
func head(ids []string) []string {
	if len(ids) > 10 {
		return ids[:10]
	}
	return ids
}
