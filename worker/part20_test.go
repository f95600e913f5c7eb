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
