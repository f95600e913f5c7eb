package worker_test

import (
	"context"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// Entries written straight into the stream whose envelope breaks the rules
// the client enforces (a task key or kind outside the name alphabet, a kind
// of 10 KB, a retention Redis cannot set) are dead-lettered as malformed
// under their entry id, which Client.Task accepts; none of them runs, and
// none is parked as a kind nobody serves.
func TestHostileEntriesDeadLettered(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := ctxT(t)
	var ran atomic.Int64
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a rcvNormal) (rcvResult, error) {
			ran.Add(1)
			return rcvResult{N: a.N}, nil
		})
	})
	good := codec.Envelope{Kind: "rcv.normal", Payload: []byte{0x80}, Attempt: 1, MaxAttempts: 3, RetainMs: 60000}
	hostile := map[string]func(e *codec.Envelope){
		"key with a space":   func(e *codec.Envelope) { e.Key = "a b" },
		"key with braces":    func(e *codec.Envelope) { e.Key = "x{y}" },
		"kind with spaces":   func(e *codec.Envelope) { e.Kind = "bad kind {x}" },
		"kind of 10 KB":      func(e *codec.Envelope) { e.Kind = strings.Repeat("k", 10<<10) },
		"retention too long": func(e *codec.Envelope) { e.RetainMs = math.MaxInt64 },
		"bad partition":      func(e *codec.Envelope) { e.Key, e.Partition = "pt", "p q" },
		"bad group":          func(e *codec.Envelope) { e.Key, e.Group = "gm", "group:{x} y" },
	}
	stream := keys.ForQueue(b.queue).Stream()
	want := map[string]string{} // task id -> case
	for name, spoil := range hostile {
		e := good
		spoil(&e)
		id, err := b.env.RDB.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"m", codec.AppendEnvelope(nil, &e)}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		want[keys.TaskID(b.queue, id)] = name
	}
	var dead []client.DeadTask
	testenv.Eventually(t, 10*time.Second, "every hostile entry dead-lettered", func() bool {
		var err error
		dead, err = b.c.DeadTasks(ctx, b.queue, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		return len(dead) >= len(hostile)
	})
	for _, d := range dead {
		name, ok := want[d.ID]
		if !ok {
			t.Fatalf("dead letter %s (%q) is none of the hostile entries %v", d.ID, d.Error, want)
		}
		if !strings.Contains(d.Error, "malformed entry") {
			t.Fatalf("%s: dead letter %s has reason %q; want malformed entry", name, d.ID, d.Error)
		}
		h, err := b.c.Task(d.ID)
		if err != nil {
			t.Fatalf("%s: Client.Task(%q): %v", name, d.ID, err)
		}
		if st, err := h.State(ctx); err != nil || st != client.StateDead {
			t.Fatalf("%s: %s in state %q (%v); want dead", name, d.ID, st, err)
		}
		delete(want, d.ID)
	}
	if len(want) > 0 {
		t.Fatalf("not dead-lettered: %v", want)
	}
	if n := ran.Load(); n != 0 {
		t.Fatalf("the handler ran %d times for hostile entries; want none", n)
	}
	if n, err := b.env.RDB.ZCard(ctx, keys.ForQueue(b.queue).Scheduled()).Result(); err != nil || n != 0 {
		t.Fatalf("%d tasks scheduled (%v); want none parked", n, err)
	}
	if n := pendingCount(t, b); n != 0 {
		t.Fatalf("XPENDING count %d; want 0", n)
	}
}
