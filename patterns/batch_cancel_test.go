package patterns_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// cutDrain fails every command of the client it hooks that names the
// outbox key, but cancel.lua: the canceller's drain of the outbox (which
// would end a batch's items at once) does not get through.
type cutDrain struct{ outbox string }

var errCut = errors.New("connection cut (test)")

func (h cutDrain) drain(cmd redis.Cmder) bool {
	a := cmd.Args()
	if cmd.Name() == "evalsha" && len(a) > 1 && a[1] == script.Cancel.Hash() {
		return false
	}
	for _, v := range a {
		if v == h.outbox {
			return true
		}
	}
	return false
}

func (cutDrain) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h cutDrain) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.drain(cmd) {
			cmd.SetErr(errCut)
			return errCut
		}
		return next(ctx, cmd)
	}
}

func (h cutDrain) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if h.drain(c) {
				for _, c := range cmds {
					c.SetErr(errCut)
				}
				return errCut
			}
		}
		return next(ctx, cmds)
	}
}

// A batch cancelled while it waits never runs, even when a Flush comes
// before its items were ended: they end cancelled, not succeeded.
func TestCancelledBatchNeverRuns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	bt, err := patterns.NewBatch[Double, int](b.c, &patterns.BatchOpts{MaxSize: 10, MaxWait: time.Hour, Queue: b.queue})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := bt.AppendMany(ctx, []Double{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	batchID, _, _ := strings.Cut(hs[0].ID(), ".")

	rdb := testenv.NewEnvClient(b.env)
	t.Cleanup(func() { _ = rdb.Close() })
	if err := script.Load(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	rdb.AddHook(cutDrain{outbox: keys.ForQueue(b.queue).Outbox()})
	canceller, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = canceller.Close() })
	bh, err := canceller.Task(batchID)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := bh.Cancel(ctx); st != client.StateCancelled || !errors.Is(err, errCut) {
		t.Fatalf("cancel batch %s: %q, %v; want cancelled, and the drain cut", batchID, st, err)
	}
	if ok, err := bt.Flush(ctx); err != nil || ok {
		t.Fatalf("Flush after the batch was cancelled: %v %v; want false (no open batch)", ok, err)
	}
	var log batchLog
	b.worker(t, nil, func(w *worker.Worker) { worker.HandleBatch(w, doubles(log.handle)) })
	for i, h := range hs {
		if _, err := h.Outcome(ctx); !errors.Is(err, client.ErrCancelled) {
			t.Errorf("item %d: %v, want cancelled", i, err)
		}
	}
	if s := log.sizes(); len(s) != 0 {
		t.Errorf("the handler ran batches of %v items; the batch was cancelled", s)
	}
}
