package worker_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// stepCalls counts the partstep.lua calls a client sends.
type stepCalls struct{ n atomic.Int64 }

func (*stepCalls) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *stepCalls) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.count(cmd)
		return next(ctx, cmd)
	}
}

func (h *stepCalls) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			h.count(c)
		}
		return next(ctx, cmds)
	}
}

func (h *stepCalls) count(cmd redis.Cmder) {
	if a := cmd.Args(); len(a) > 1 && a[0] == "evalsha" && a[1] == script.PartStep.Hash() {
		h.n.Add(1)
	}
}

// One worker steps each partition once per end of its tasks: its forward
// loop's outbox sweep and its completer's drain do not read the same
// entries at once (the second to reach an entry found the step done, or
// the list changed, and read and called again). Only the first task of
// each key ends through the outbox (partstep.lua): its enqueue put it in
// the stream before any task was behind it, so its entry names none; every
// later one was started by a step that named the next, and its end steps
// the partition in complete.lua.
func TestPartitionEachEndSteppedOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	keysN, perKey := 300, 5
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var hs []*client.Handle
	for s := 0; s < perKey; s++ {
		specs := make([]client.Spec, 0, keysN)
		for k := 0; k < keysN; k++ {
			key := "k" + strconv.Itoa(k)
			specs = append(specs, client.Spec{Args: PartJob{Key: key, Seq: s}, Opts: &client.EnqueueOpts{Queue: b.queue, PartitionKey: key}})
		}
		got, err := b.c.EnqueueMany(ctx, specs)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, got...)
	}
	log := newPartLog()
	var steps stepCalls
	wrdb := testenv.NewClient(b.env.Addr)
	wrdb.AddHook(&steps)
	t.Cleanup(func() { _ = wrdb.Close() })
	b.workerOn(t, wrdb, &worker.Config{Concurrency: 64}, func(w *worker.Worker) { worker.Handle(w, log.handle) })
	if err := client.WaitAll(ctx, hs...); err != nil {
		t.Fatal(err)
	}
	outbox := keys.ForQueue(b.queue).Outbox()
	testenv.Eventually(t, 30*time.Second, "the outbox drained", func() bool { return b.env.RDB.XLen(ctx, outbox).Val() == 0 })
	if got, want := steps.n.Load(), int64(keysN); got != want {
		t.Errorf("%d tasks ended; partstep.lua ran %d times; want once per end of a key's first task (%d)", keysN*perKey, got, want)
	}
	want := map[string][]int{}
	for k := 0; k < keysN; k++ {
		want["k"+strconv.Itoa(k)] = seqs(perKey)
	}
	log.check(t, want)
}

// Tasks enqueued while two workers run them keep their key's order and run
// once each (a retried one once per attempt), whichever way their ends step
// the partition: in complete.lua (their entry named the task behind them
// and the list agreed) or through the outbox (a key's first task, a task
// something was appended behind after it started, a retried attempt, a
// dead task). Afterwards no partition list is left and none is counted
// waiting.
// (Redis resends are not injected here: the conformance rows do that.)
func TestPartitionInlineStepOrderExactlyOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := newPartLog()
	var steps stepCalls
	const keysN, perKey = 100, 8
	runs := map[string]int{} // key/seq -> runs its handler should see
	var hs []*client.Handle
	var dead []*client.Handle
	for s := 0; s < perKey; s++ {
		if s == perKey/2 {
			// The first rounds wait for the workers (their ends step
			// the partitions in complete.lua); the later ones are
			// enqueued while the workers run.
			for range 2 {
				wrdb := testenv.NewClient(b.env.Addr)
				wrdb.AddHook(&steps)
				t.Cleanup(func() { _ = wrdb.Close() })
				b.workerOn(t, wrdb, &worker.Config{Concurrency: 32}, func(w *worker.Worker) { worker.Handle(w, log.handle) })
			}
		}
		specs := make([]client.Spec, 0, keysN)
		for k := 0; k < keysN; k++ {
			key := "k" + strconv.Itoa(k)
			j := PartJob{Key: key, Seq: s}
			switch {
			case s == 2 && k%7 == 0:
				j.Fail = 1
			case s == 5 && k%11 == 0:
				j.Dead = true
			}
			runs[key+"/"+strconv.Itoa(s)] = 1 + j.Fail
			specs = append(specs, client.Spec{Args: j, Opts: &client.EnqueueOpts{Queue: b.queue, PartitionKey: key}})
		}
		// Half of each round in one batch, half one by one.
		got, err := b.c.EnqueueMany(ctx, specs[:keysN/2])
		if err != nil {
			t.Fatal(err)
		}
		for _, sp := range specs[keysN/2:] {
			h, err := b.c.Enqueue(ctx, sp.Args, sp.Opts)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, h)
		}
		for i, h := range got {
			if j := specs[i].Args.(PartJob); j.Dead {
				dead = append(dead, h)
			} else {
				hs = append(hs, h)
			}
		}
	}
	if err := client.WaitAll(ctx, hs...); err != nil {
		t.Fatal(err)
	}
	for _, h := range dead {
		testenv.Eventually(t, 30*time.Second, "a dead task to be dead", func() bool {
			st, err := h.State(ctx)
			return err == nil && st == client.StateDead
		})
	}
	want := map[string][]int{}
	for k := 0; k < keysN; k++ {
		want["k"+strconv.Itoa(k)] = seqs(perKey)
	}
	log.check(t, want)
	log.mu.Lock()
	seen := map[string]int{}
	for k, order := range log.order {
		for _, s := range order {
			seen[k+"/"+strconv.Itoa(s)]++
		}
	}
	log.mu.Unlock()
	for ks, n := range runs {
		if seen[ks] != n {
			t.Errorf("task %s ran %d times; want %d", ks, seen[ks], n)
		}
	}
	q := keys.ForQueue(b.queue)
	testenv.Eventually(t, 30*time.Second, "the outbox drained", func() bool { return b.env.RDB.XLen(ctx, q.Outbox()).Val() == 0 })
	// The tasks of the second round, at least, were started by a step
	// when the third was behind them, and none is retried: their ends
	// stepped their partitions in complete.lua.
	if got, most := steps.n.Load(), int64(keysN*perKey-keysN); got > most {
		t.Errorf("partstep.lua ran %d times for %d ends; want at most %d", got, keysN*perKey, most)
	}
	t.Logf("partstep.lua ran %d times for %d ends", steps.n.Load(), keysN*perKey)
	for k := 0; k < keysN; k++ {
		if n := b.env.RDB.LLen(ctx, q.Partition("k"+strconv.Itoa(k))).Val(); n != 0 {
			t.Errorf("partition k%d lists %d tasks after all ended; want 0", k, n)
		}
	}
	if pw := b.env.RDB.HGet(ctx, q.Stats(), "pw").Val(); pw != "0" {
		t.Errorf("tasks counted waiting in a partition: %q; want 0", pw)
	}
}
