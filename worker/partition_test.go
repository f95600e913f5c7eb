package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// PartJob is a partitioned task: the Seq-th of its key.
type PartJob struct {
	Key  string
	Seq  int
	Fail int  // fail this many attempts first
	Hold bool // block until released (in-process) or killed (subprocess)
	Dead bool // fail permanently
}

func (PartJob) Kind() string { return "part.job" }

// partLog records, per key, the order runs started in, and checks that no
// two runs of one key overlap.
type partLog struct {
	mu      sync.Mutex
	order   map[string][]int
	running map[string]int
	overlap []string
	maxAll  int
	all     int
	release chan struct{}
	held    chan string
}

func newPartLog() *partLog {
	return &partLog{order: map[string][]int{}, running: map[string]int{}, release: make(chan struct{}), held: make(chan string, 10)}
}

func (l *partLog) handle(ctx context.Context, j PartJob) (int, error) {
	tk, _ := worker.TaskFromContext(ctx)
	l.mu.Lock()
	l.order[j.Key] = append(l.order[j.Key], j.Seq)
	l.running[j.Key]++
	if l.running[j.Key] > 1 {
		l.overlap = append(l.overlap, fmt.Sprintf("%s/%d", j.Key, j.Seq))
	}
	l.all++
	l.maxAll = max(l.maxAll, l.all)
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.running[j.Key]--
		l.all--
		l.mu.Unlock()
	}()
	if tk.PartitionKey != j.Key {
		return 0, worker.Permanent(fmt.Errorf("TaskFromContext says partition %q, want %q", tk.PartitionKey, j.Key))
	}
	if j.Hold {
		l.held <- j.Key
		select {
		case <-l.release:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if j.Dead {
		return 0, worker.Permanent(errors.New("dead on purpose"))
	}
	if tk.Attempt <= j.Fail {
		return 0, errors.New("failing on purpose")
	}
	// Give other runs of the same key a chance to overlap, were they let.
	time.Sleep(time.Millisecond)
	return j.Seq, nil
}

func (l *partLog) check(t *testing.T, want map[string][]int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.overlap) > 0 {
		t.Errorf("runs of one key overlapped: %v", l.overlap)
	}
	for k, w := range want {
		got := dedupe(l.order[k])
		if fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("key %s ran in order %v, want %v", k, l.order[k], w)
		}
	}
}

// dedupe drops immediate repeats (retries of one task).
func dedupe(s []int) []int {
	var out []int
	for i, v := range s {
		if i == 0 || s[i-1] != v {
			out = append(out, v)
		}
	}
	return out
}

func seqs(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// Tasks of one key run one at a time in enqueue order; keys run in
// parallel; a retry keeps its key's turn.
func TestPartitionOrderAndParallelism(t *testing.T) {
	t.Parallel()
	b := setup(t)
	log := newPartLog()
	b.worker(t, &worker.Config{Concurrency: 16}, func(w *worker.Worker) { worker.Handle(w, log.handle) })
	ctx := ctxT(t)
	const keysN, perKey = 20, 10
	var specs []client.Spec
	want := map[string][]int{}
	for s := 0; s < perKey; s++ {
		for k := 0; k < keysN; k++ {
			key := "user:" + strconv.Itoa(k)
			fail := 0
			if s == 3 && k%5 == 0 {
				fail = 2 // retried twice: the next of its key must wait
			}
			specs = append(specs, client.Spec{Args: PartJob{Key: key, Seq: s, Fail: fail}, Opts: &client.EnqueueOpts{Queue: b.queue, PartitionKey: key}})
			want[key] = seqs(perKey)
		}
	}
	// Half in one batch, half one by one: both paths keep the order.
	hs, err := b.c.EnqueueMany(ctx, specs[:len(specs)/2])
	if err != nil {
		t.Fatal(err)
	}
	for _, sp := range specs[len(specs)/2:] {
		h, err := b.c.Enqueue(ctx, sp.Args, sp.Opts)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	if err := client.WaitAll(ctx, hs...); err != nil {
		t.Fatal(err)
	}
	log.check(t, want)
	if log.maxAll < 4 {
		t.Errorf("at most %d tasks ran at once: keys did not run in parallel", log.maxAll)
	}
}

// A key whose task blocks holds up only its own later tasks: they wait in
// Redis (state waiting), other keys run.
func TestPartitionNoHeadOfLineBlocking(t *testing.T) {
	t.Parallel()
	b := setup(t)
	log := newPartLog()
	b.worker(t, &worker.Config{Concurrency: 4}, func(w *worker.Worker) { worker.Handle(w, log.handle) })
	ctx := ctxT(t)
	stuck, err := b.c.Enqueue(ctx, PartJob{Key: "slow", Seq: 0, Hold: true}, &client.EnqueueOpts{Queue: b.queue, PartitionKey: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	<-log.held
	behind, err := b.c.Enqueue(ctx, PartJob{Key: "slow", Seq: 1}, &client.EnqueueOpts{Queue: b.queue, PartitionKey: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	var others []*client.Handle
	for i := 0; i < 50; i++ {
		key := "fast" + strconv.Itoa(i%5)
		h, err := b.c.Enqueue(ctx, PartJob{Key: key, Seq: i / 5}, &client.EnqueueOpts{Queue: b.queue, PartitionKey: key})
		if err != nil {
			t.Fatal(err)
		}
		others = append(others, h)
	}
	if err := client.WaitAll(ctx, others...); err != nil {
		t.Fatal(err)
	}
	if st, err := behind.State(ctx); err != nil || st != client.StateWaiting {
		t.Fatalf("task behind the stuck one is %q (%v), want waiting", st, err)
	}
	close(log.release)
	if err := client.WaitAll(ctx, stuck, behind); err != nil {
		t.Fatal(err)
	}
	want := map[string][]int{"slow": {0, 1}}
	for i := 0; i < 5; i++ {
		want["fast"+strconv.Itoa(i)] = seqs(10)
	}
	log.check(t, want)
}

// A task cancelled while it waits is skipped; a dead head lets the next run;
// RetryDead puts the dead one at the tail of its key.
func TestPartitionCancelDeadRetry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	log := newPartLog()
	ctx := ctxT(t)
	key := "k"
	enq := func(j PartJob) *client.Handle {
		t.Helper()
		h, err := b.c.Enqueue(ctx, j, &client.EnqueueOpts{Queue: b.queue, PartitionKey: key, MaxAttempts: 1})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	// Enqueued before any worker runs: only the first is in the stream.
	h0 := enq(PartJob{Key: key, Seq: 0, Dead: true})
	h1 := enq(PartJob{Key: key, Seq: 1})
	h2 := enq(PartJob{Key: key, Seq: 2})
	h3 := enq(PartJob{Key: key, Seq: 3})
	for i, h := range []*client.Handle{h1, h2, h3} {
		if st, _ := h.State(ctx); st != client.StateWaiting {
			t.Fatalf("task %d is %q before the worker starts, want waiting", i+1, st)
		}
	}
	if st, err := h2.Cancel(ctx); err != nil || st != client.StateCancelled {
		t.Fatalf("cancel a waiting task: %q, %v", st, err)
	}
	b.worker(t, nil, func(w *worker.Worker) { worker.Handle(w, log.handle) })
	if err := client.WaitAll(ctx, h1, h3); err != nil {
		t.Fatal(err)
	}
	if st, _ := h0.State(ctx); st != client.StateDead {
		t.Fatalf("task 0 is %q, want dead", st)
	}
	log.check(t, map[string][]int{key: {0, 1, 3}})

	// A task enqueued while the key is busy, then the dead one retried:
	// it runs after that task.
	hold := enq(PartJob{Key: key, Seq: 4, Hold: true})
	<-log.held
	if _, err := b.c.RetryDead(ctx, h0.ID()); err != nil {
		t.Fatal(err)
	}
	if st, _ := h0.State(ctx); st != client.StateWaiting {
		t.Fatalf("retried dead task is %q while its key is busy, want waiting", st)
	}
	close(log.release)
	if err := client.WaitAll(ctx, hold); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the retried task to run", func() bool {
		st, _ := h0.State(ctx)
		return st == client.StateDead && len(log.orderOf(key)) == 5
	})
	log.check(t, map[string][]int{key: {0, 1, 3, 4, 0}})
}

func (l *partLog) orderOf(key string) []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int(nil), l.order[key]...)
}

func TestPartitionBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	for _, tc := range []struct {
		opts client.EnqueueOpts
		want string
	}{
		{client.EnqueueOpts{PartitionKey: "a b"}, `partition key "a b" has ' '`},
		{client.EnqueueOpts{PartitionKey: strings.Repeat("x", 257)}, "limit is 256"},
		{client.EnqueueOpts{PartitionKey: "a", Delay: time.Second}, "PartitionKey and ProcessAt/Delay"},
	} {
		tc.opts.Queue = b.queue
		if _, err := b.c.Enqueue(ctx, PartJob{}, &tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error containing %q", tc.opts, err, tc.want)
		}
	}
	parent, err := b.c.Enqueue(ctx, PartJob{}, &client.EnqueueOpts{Queue: b.queue, Delay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parent.ContinueWith(ctx, PartJob{}, &client.ContinueOpts{EnqueueOpts: client.EnqueueOpts{PartitionKey: "a"}}); err == nil || !strings.Contains(err.Error(), "not a group's members, joins or continuations") {
		t.Errorf("partitioned continuation: %v", err)
	}
}

// Scale: many keys, each in order. Not in parallel with the other tests:
// its 100,000 tasks load Redis enough to upset their timing.
func TestPartitionManyKeys(t *testing.T) {
	b := setup(t)
	keysN, perKey := 10000, 10
	if !testenv.Real() {
		keysN = 300 // miniredis under -race is slow; the real-Redis pass runs all
	}
	log := newPartLog()
	b.worker(t, &worker.Config{Concurrency: 256}, func(w *worker.Worker) { worker.Handle(w, log.handle) })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var hs []*client.Handle
	want := map[string][]int{}
	for s := 0; s < perKey; s++ {
		specs := make([]client.Spec, 0, keysN)
		for k := 0; k < keysN; k++ {
			key := "k" + strconv.Itoa(k)
			specs = append(specs, client.Spec{Args: PartJob{Key: key, Seq: s}, Opts: &client.EnqueueOpts{Queue: b.queue, PartitionKey: key}})
			want[key] = seqs(perKey)
		}
		got, err := b.c.EnqueueMany(ctx, specs)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, got...)
	}
	start := time.Now()
	if err := client.WaitAll(ctx, hs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d keys × %d tasks ran in %v", keysN, perKey, time.Since(start))
	log.check(t, want)
}

// A worker process SIGKILLed while it runs the head of a key: after its
// lease the task runs again, on the other worker, before the next of its
// key; other keys go on meanwhile. Real Redis (leases, subprocesses).
func TestPartitionWorkerKilled(t *testing.T) {
	testenv.RequireReal(t)
	t.Parallel()
	b := setup(t)
	lease := 2 * time.Second
	workers := []*subWorker{
		startSubWorker(t, b, rolePart, subConfig{Lease: lease, Concurrency: 4}),
		startSubWorker(t, b, rolePart, subConfig{Lease: lease, Concurrency: 4}),
	}
	ctx := ctxT(t)
	var hs []*client.Handle
	for s := 0; s < 4; s++ {
		for k := 0; k < 3; k++ {
			key := "k" + strconv.Itoa(k)
			j := PartJob{Key: key, Seq: s, Hold: k == 0 && s == 0}
			h, err := b.c.Enqueue(ctx, j, &client.EnqueueOpts{Queue: b.queue, PartitionKey: key})
			if err != nil {
				t.Fatal(err)
			}
			hs = append(hs, h)
		}
	}
	held := waitSignal(t, b, "held", 10*time.Second)
	// The keys other than k0 finish while k0's head is stuck.
	for i, h := range hs {
		if i%3 == 0 {
			continue
		}
		if _, err := h.Outcome(ctx); err != nil {
			t.Fatalf("task %d: %v", i, err)
		}
	}
	if st, _ := hs[3].State(ctx); st != client.StateWaiting {
		t.Fatalf("k0's second task is %q while its first is stuck, want waiting", st)
	}
	for _, w := range workers {
		if w.pid() == held.Pid {
			w.signal(syscall.SIGKILL)
		}
	}
	if err := client.WaitAll(ctx, hs...); err != nil {
		t.Fatal(err)
	}
	starts, err := b.env.RDB.LRange(ctx, partStartsKey(b.queue), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	var k0 []string
	for _, s := range starts {
		if strings.HasPrefix(s, "k0 ") {
			k0 = append(k0, strings.TrimPrefix(s, "k0 "))
		}
	}
	// k0/0 started twice (killed, then again), then 1, 2, 3 (a start
	// repeated by a redelivery under load is no order violation).
	if len(k0) < 5 || k0[0] != "0" || k0[1] != "0" {
		t.Errorf("k0 started %v, want 0 (killed) and 0 again first", k0)
	}
	var order []string
	for i, s := range k0 {
		if i == 0 || k0[i-1] != s {
			order = append(order, s)
		}
	}
	if want := "[0 1 2 3]"; fmt.Sprint(order) != want {
		t.Errorf("k0 started in order %v, want %s", k0, want)
	}
}

const rolePart = "part"

func partStartsKey(queue string) string { return "parttest:{q:" + queue + "}:starts" }

func init() {
	extraRoles[rolePart] = partMain
	extraRoles[rolePartProducer] = partProducerMain
}

const (
	rolePartProducer = "part.producer"
	envPartProducer  = "PART_PRODUCER" // the producer's number
)

// partProducerMain enqueues 20 tasks for each of the keys k0..k9, Seq
// counting up from 1000 × its number, and exits.
func partProducerMain(string) {
	queue := os.Getenv(envQueue)
	p, _ := strconv.Atoi(os.Getenv(envPartProducer))
	rdb := testenv.NewClient(os.Getenv(envAddr))
	c, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		for k := 0; k < 10; k++ {
			key := "k" + strconv.Itoa(k)
			if _, err := c.Enqueue(ctx, PartJob{Key: key, Seq: 1000*p + i}, &client.EnqueueOpts{Queue: queue, PartitionKey: key}); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(3)
			}
		}
	}
}

// partMain is a worker process for TestPartitionWorkerKilled: it records
// each start, and the first run of a Hold task signals "held" and blocks.
func partMain(string) {
	queue := os.Getenv(envQueue)
	leaseMs, _ := strconv.Atoi(os.Getenv(envLease))
	conc, _ := strconv.Atoi(os.Getenv(envConcurrency))
	rdb := testenv.NewClient(os.Getenv(envAddr))
	w, err := worker.New(context.Background(), rdb, &worker.Config{Queues: map[string]int{queue: 1}, Lease: time.Duration(leaseMs) * time.Millisecond,
		Concurrency: conc, BlockTimeout: 100 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	worker.Handle(w, func(ctx context.Context, j PartJob) (int, error) {
		if err := rdb.RPush(ctx, partStartsKey(queue), j.Key+" "+strconv.Itoa(j.Seq)).Err(); err != nil {
			return 0, err
		}
		// Two runs of one key at once, across the processes, would show
		// here.
		running := partStartsKey(queue) + ":running:" + j.Key
		if n, err := rdb.Incr(ctx, running).Result(); err != nil {
			return 0, err
		} else if n > 1 {
			rdb.RPush(ctx, partStartsKey(queue)+":overlaps", j.Key+" "+strconv.Itoa(j.Seq))
		}
		defer rdb.Decr(context.WithoutCancel(ctx), running)
		if j.Hold {
			if first, err := rdb.SetNX(ctx, partStartsKey(queue)+":held", 1, time.Minute).Result(); err == nil && first {
				b, _ := json.Marshal(rcvSignal{Pid: os.Getpid()})
				rdb.RPush(ctx, signalKey(queue, "held"), b)
				select {} // the test kills us
			}
		}
		return j.Seq, nil
	})
	if err := w.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	select {}
}

// Three producer processes and two worker processes: for every key, runs
// never overlap and each producer's tasks run in the order it enqueued
// them. Real Redis.
func TestPartitionAcrossProcesses(t *testing.T) {
	testenv.RequireReal(t)
	t.Parallel()
	b := setup(t)
	for i := 0; i < 2; i++ {
		startSubWorker(t, b, rolePart, subConfig{Lease: 5 * time.Second, Concurrency: 8})
	}
	var prods []*subWorker
	for p := 0; p < 3; p++ {
		prods = append(prods, startSubWorkerEnv(t, b, rolePartProducer, subConfig{Lease: time.Second}, envPartProducer+"="+strconv.Itoa(p)))
	}
	for _, p := range prods {
		if code := p.waitExit(30 * time.Second); code != 0 {
			t.Fatalf("producer exited %d", code)
		}
	}
	ctx := ctxT(t)
	testenv.Eventually(t, 30*time.Second, "600 starts", func() bool {
		n, _ := b.env.RDB.LLen(ctx, partStartsKey(b.queue)).Result()
		return n >= 600
	})
	starts, err := b.env.RDB.LRange(ctx, partStartsKey(b.queue), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]int{} // key/producer → last seq
	for _, s := range starts {
		key, seqText, _ := strings.Cut(s, " ")
		seq, _ := strconv.Atoi(seqText)
		kp := key + "/" + strconv.Itoa(seq/1000)
		if prev, ok := last[kp]; ok && seq == prev {
			continue // started again by a redelivery
		}
		if prev, ok := last[kp]; ok && seq < prev {
			t.Errorf("key %s: producer %d's task %d started after its %d", key, seq/1000, seq%1000, prev%1000)
		}
		last[kp] = seq
	}
	if len(starts) < 600 || len(last) != 30 {
		t.Errorf("%d starts over %d key/producer pairs, want 600 (or more, with redeliveries) over 30", len(starts), len(last))
	}
	if o, _ := b.env.RDB.LRange(ctx, partStartsKey(b.queue)+":overlaps", 0, -1).Result(); len(o) > 0 {
		t.Errorf("runs of one key overlapped: %v", o)
	}
}

// One EnqueueMany of many chunks keeps enqueue order within a partition
// (its pipelines go one after the other).
func TestPartitionEnqueueManyOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	specs := make([]client.Spec, 6000)
	for i := range specs {
		specs[i] = client.Spec{Args: PartJob{Key: "one", Seq: i}, Opts: &client.EnqueueOpts{Queue: b.queue, PartitionKey: "one"}}
	}
	hs, err := b.c.EnqueueMany(ctx, specs)
	if err != nil {
		t.Fatal(err)
	}
	list, err := b.env.RDB.LRange(ctx, keys.ForQueue(b.queue).Partition("one"), 0, -1).Result()
	if err != nil || len(list) != len(hs) {
		t.Fatalf("partition holds %d keys (%v), want %d", len(list), err, len(hs))
	}
	for i, h := range hs {
		if want := b.queue + "/" + list[i]; h.ID() != want {
			t.Fatalf("partition position %d holds %s, enqueued %s there", i, want, h.ID())
		}
	}
}

// RetryDead of a dead head whose end was not drained yet puts it behind the
// next task of its key, not ahead of it.
func TestPartitionRetryDeadBeforeDrain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	q := keys.ForQueue(b.queue)
	a, err := b.c.Enqueue(ctx, PartJob{Key: "k", Seq: 0}, &client.EnqueueOpts{Queue: b.queue, PartitionKey: "k", ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.c.Enqueue(ctx, PartJob{Key: "k", Seq: 1}, &client.EnqueueOpts{Queue: b.queue, PartitionKey: "k", ID: "b"}); err != nil {
		t.Fatal(err)
	}
	// What complete.lua leaves when a dies: its record dead, the stream
	// entry gone, the outbox entry not drained yet.
	env, err := b.env.RDB.XRange(ctx, q.Stream(), "-", "+").Result()
	if err != nil || len(env) != 1 {
		t.Fatalf("stream: %v, %v", env, err)
	}
	m, _ := env[0].Values["m"].(string)
	if err := b.env.RDB.HSet(ctx, q.Task("a"), "st", "dead", "m", m, "err", "x").Err(); err != nil {
		t.Fatal(err)
	}
	b.env.RDB.HDel(ctx, q.Task("a"), "e")
	b.env.RDB.XDel(ctx, q.Stream(), env[0].ID)
	b.env.RDB.ZAdd(ctx, q.Dead(), redis.Z{Score: 1, Member: "a"})
	if _, err := b.c.RetryDead(ctx, a.ID()); err != nil {
		t.Fatal(err)
	}
	list, _ := b.env.RDB.LRange(ctx, q.Partition("k"), 0, -1).Result()
	if fmt.Sprint(list) != "[b a]" {
		t.Fatalf("partition %v after RetryDead, want [b a]", list)
	}
	if st, _ := a.State(ctx); st != client.StateWaiting {
		t.Fatalf("retried task is %q, want waiting behind b", st)
	}
}
