package patterns_test

// Batch across processes on real Redis: worker processes run batches,
// producer processes append items (both roles of the fleet subprocess).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

const (
	envBatchN    = "FLEET_BATCH_N"    // items per producer
	envBatchBase = "FLEET_BATCH_BASE" // first item value of a producer
)

var batchRoles = map[string]func(){
	"batchworker":   batchWorkerMain,
	"batchproducer": batchProducerMain,
	"partproducer":  partProducerMain,
}

func batchRunsKey(queue string) string { return "fleettest:{q:" + queue + "}:batchruns" }
func batchIDsKey(queue string) string  { return "fleettest:{q:" + queue + "}:batchids" }

// batchRun is one run of a batch as a worker process saw it.
type batchRun struct {
	Pid   int
	Batch string
	Items []int
}

func fleetGuards() {
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(4)
	}()
	time.AfterFunc(2*time.Minute, func() { os.Exit(5) })
}

// fleetDouble is an item of the "fleet.double" batches.
type fleetDouble int

func (fleetDouble) Kind() string { return "fleet.double" }

func batchOpts(queue string) *patterns.BatchOpts {
	return &patterns.BatchOpts{MaxSize: 50, MaxWait: 100 * time.Millisecond, Queue: queue}
}

// batchWorkerMain runs batches of "fleet.double"; the first run of a batch
// holding item -1 announces itself ("held") and blocks until killed.
func batchWorkerMain() {
	fleetGuards()
	queue := os.Getenv(envFleetQueue)
	leaseMs, _ := strconv.Atoi(os.Getenv(envFleetLease))
	rdb := testenv.NewClient(os.Getenv(envFleetAddr))
	w, err := worker.New(context.Background(), rdb, &worker.Config{Queues: map[string]int{queue: 1}, Concurrency: 8,
		Lease: time.Duration(leaseMs) * time.Millisecond, BlockTimeout: 100 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	worker.Handle(w, sumPart) // Partitioner tasks (TestPartitionerAcrossProcesses)
	worker.HandleBatch(w, func(ctx context.Context, ds []fleetDouble) ([]int, error) {
		items := make([]int, len(ds))
		for i, d := range ds {
			items[i] = int(d)
		}
		tk, _ := worker.TaskFromContext(ctx)
		b, _ := json.Marshal(batchRun{Pid: os.Getpid(), Batch: tk.ID, Items: items})
		if err := rdb.RPush(ctx, batchRunsKey(queue), b).Err(); err != nil {
			return nil, err
		}
		for _, it := range items {
			if it == -1 {
				if first, err := rdb.SetNX(ctx, batchRunsKey(queue)+":held", 1, time.Minute).Result(); err == nil && first {
					rdb.RPush(ctx, batchRunsKey(queue)+":heldby", os.Getpid())
					select {} // the test kills us
				}
			}
		}
		out := make([]int, len(items))
		for i, it := range items {
			out[i] = 2 * it
		}
		return out, nil
	})
	if err := w.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	select {}
}

// batchProducerMain appends FLEET_BATCH_N items from FLEET_BATCH_BASE on,
// one by one, recording each item's task id, then exits.
func batchProducerMain() {
	fleetGuards()
	queue := os.Getenv(envFleetQueue)
	n, _ := strconv.Atoi(os.Getenv(envBatchN))
	base, _ := strconv.Atoi(os.Getenv(envBatchBase))
	rdb := testenv.NewClient(os.Getenv(envFleetAddr))
	c, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	bt, err := patterns.NewBatch[fleetDouble, int](c, batchOpts(queue))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	ctx := context.Background()
	for i := 0; i < n; i++ {
		v := base + i
		if base == 0 && i == n/2 {
			v = -1 // the item whose batch's first run is killed
		}
		h, err := bt.Append(ctx, fleetDouble(v))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		if err := rdb.HSet(ctx, batchIDsKey(queue), strconv.Itoa(v), h.ID()).Err(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
	}
	os.Exit(0)
}

// Two worker processes, three producer processes appending at once, and
// the worker running one batch SIGKILLed: every item gets its own result,
// no item is in two batches, no batch exceeds MaxSize, and the killed batch
// runs again whole on the other worker.
func TestBatchAcrossProcesses(t *testing.T) {
	testenv.RequireReal(t)
	t.Parallel()
	b := setup(t)
	lease := 2 * time.Second
	workers := startFleet(t, b.env, b.queue, 2, lease, "ASYNC_TEST_SUBPROCESS=batchworker")
	testenv.StartCoordinators(t, b.env, 1)
	const perProducer = 200
	producers := startProducers(t, b, "batchproducer", perProducer, 1000)
	ctx := ctxT(t)
	waitProducers(t, ctx, producers, nil)
	var heldBy int
	testenv.Eventually(t, 20*time.Second, "the held batch", func() bool {
		v, err := b.env.RDB.LIndex(ctx, batchRunsKey(b.queue)+":heldby", 0).Int()
		heldBy = v
		return err == nil
	})
	if p := workers[heldBy]; p != nil {
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	} else {
		t.Fatalf("the held batch's process %d is not one of ours", heldBy)
	}
	ids, err := b.env.RDB.HGetAll(ctx, batchIDsKey(b.queue)).Result()
	if err != nil || len(ids) != 3*perProducer {
		t.Fatalf("%d item ids recorded (%v), want %d", len(ids), err, 3*perProducer)
	}
	for v, id := range ids {
		h, err := b.c.Task(id)
		if err != nil {
			t.Fatal(err)
		}
		got, err := client.Result[int](ctx, h)
		n, _ := strconv.Atoi(v)
		if err != nil || got != 2*n {
			t.Fatalf("item %s: %d, %v", v, got, err)
		}
	}
	raw, err := b.env.RDB.LRange(ctx, batchRunsKey(b.queue), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	inBatch := map[int]string{}
	runsOf := map[string]int{}
	itemsOf := map[string]string{}
	for _, r := range raw {
		var run batchRun
		if err := json.Unmarshal([]byte(r), &run); err != nil {
			t.Fatal(err)
		}
		runsOf[run.Batch]++
		if prev, ok := itemsOf[run.Batch]; ok && prev != fmt.Sprint(run.Items) {
			t.Errorf("batch %s ran with items %s, then %v", run.Batch, prev, run.Items)
		}
		itemsOf[run.Batch] = fmt.Sprint(run.Items)
		if len(run.Items) > 50 {
			t.Errorf("batch %s ran with %d items, MaxSize 50", run.Batch, len(run.Items))
		}
		for _, it := range run.Items {
			if prev, ok := inBatch[it]; ok && prev != run.Batch {
				t.Errorf("item %d was in batches %s and %s", it, prev, run.Batch)
			}
			inBatch[it] = run.Batch
		}
	}
	if len(inBatch) != 3*perProducer {
		t.Errorf("%d items ran, want %d", len(inBatch), 3*perProducer)
	}
	if runsOf[inBatch[-1]] != 2 {
		t.Errorf("the killed batch ran %d times, want 2 (killed, then again)", runsOf[inBatch[-1]])
	}
}

// partProducerMain appends FLEET_BATCH_N items from FLEET_BATCH_BASE on to
// the partitioner of the queue, ten at a time, then exits.
func partProducerMain() {
	fleetGuards()
	queue := os.Getenv(envFleetQueue)
	n, _ := strconv.Atoi(os.Getenv(envBatchN))
	base, _ := strconv.Atoi(os.Getenv(envBatchBase))
	rdb := testenv.NewClient(os.Getenv(envFleetAddr))
	c, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	pt, err := patterns.NewPartitioner[int](c, "fleet", keyOf, &patterns.PartitionerOpts{Queue: queue})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	for i := 0; i < n; i += 10 {
		items := make([]int, 10)
		for j := range items {
			items[j] = base + i + j
		}
		if err := pt.Append(context.Background(), items...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
	}
	os.Exit(0)
}

// Three producer processes append to one Partitioner while this process
// flushes; two worker processes run the partitions: every item is started
// exactly once, in the partition of its key. Real Redis.
func TestPartitionerAcrossProcesses(t *testing.T) {
	testenv.RequireReal(t)
	t.Parallel()
	b := setup(t)
	startFleet(t, b.env, b.queue, 2, 5*time.Second, "ASYNC_TEST_SUBPROCESS=batchworker")
	const perProducer = 300
	producers := startProducers(t, b, "partproducer", perProducer, perProducer)
	ctx := ctxT(t)
	pt, err := patterns.NewPartitioner[int](b.c, "fleet", keyOf, &patterns.PartitionerOpts{Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	spec := func(key string, its []int) client.Spec {
		return client.Spec{Args: SumPart{Key: key, Items: its}, Opts: &client.EnqueueOpts{Queue: b.queue}}
	}
	var groups []*patterns.Partitioned
	flush := func() {
		g, err := pt.Flush(ctx, spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		if g != nil {
			groups = append(groups, g)
		}
	}
	waitProducers(t, ctx, producers, flush)
	flush()
	total, sum := 0, 0
	for _, g := range groups {
		res, err := patterns.ResultsByKey[partSum](ctx, g)
		if err != nil {
			t.Fatal(err)
		}
		for k, r := range res {
			total += r.N
			sum += r.Sum
			if !strings.HasPrefix(k, "k") {
				t.Errorf("partition key %q", k)
			}
		}
	}
	n := 3 * perProducer
	if total != n || sum != n*(n-1)/2 {
		t.Fatalf("%d items (sum %d) over %d flushes, want %d (sum %d)", total, sum, len(groups), n, n*(n-1)/2)
	}
}

// startProducers starts three producer processes of role, each appending
// perProducer items from p·step on.
func startProducers(t *testing.T, b *bundle, role string, perProducer, step int) map[int]*fleetProc {
	t.Helper()
	procs := map[int]*fleetProc{}
	for p := 0; p < 3; p++ {
		for pid, proc := range startFleet(t, b.env, b.queue, 1, time.Second, "ASYNC_TEST_SUBPROCESS="+role,
			envBatchN+"="+strconv.Itoa(perProducer), envBatchBase+"="+strconv.Itoa(p*step)) {
			procs[pid] = proc
		}
	}
	return procs
}

// waitProducers waits for the producer processes to exit 0, calling tick
// every 20 ms meanwhile when it is not nil.
func waitProducers(t *testing.T, ctx context.Context, procs map[int]*fleetProc, tick func()) {
	t.Helper()
	for _, p := range procs {
		for waiting := true; waiting; {
			var after <-chan time.Time
			if tick != nil {
				after = time.After(20 * time.Millisecond)
			}
			select {
			case <-p.exited:
				if code := p.cmd.ProcessState.ExitCode(); code != 0 {
					t.Fatalf("producer exited %d", code)
				}
				waiting = false
			case <-ctx.Done():
				t.Fatal("producers did not finish")
			case <-after:
				tick()
			}
		}
	}
}
