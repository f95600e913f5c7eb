package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/worker"
)

func TestDelayedTasks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	started := make(chan time.Time, 4)
	b.worker(t, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a UploadArgs) (UploadResult, error) {
			started <- time.Now()
			return UploadResult{Size: len(a.Path)}, nil
		})
	})
	ctx := ctxT(t)
	at := time.Now()
	before, err := b.env.RDB.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	h, err := b.c.Enqueue(ctx, UploadArgs{Path: "later"}, &client.EnqueueOpts{Queue: b.queue, Delay: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Until Redis' clock reaches the due time, the task waits scheduled. A
	// state read that a busy machine delays past the due time tells nothing.
	st, err := h.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	read, err := b.env.RDB.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if read.Before(before.Add(300*time.Millisecond)) && st != client.StateScheduled {
		t.Fatalf("delayed task state %q %v after the enqueue (Redis' clock); want scheduled", st, read.Sub(before))
	}
	// A time in the past means now: it runs before the delayed one.
	now, err := b.c.Enqueue(ctx, UploadArgs{Path: "now"}, &client.EnqueueOpts{Queue: b.queue, ProcessAt: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := now.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	<-started
	if r, err := client.Result[UploadResult](ctx, h); err != nil || r.Size != 5 {
		t.Fatalf("delayed task: %+v, %v", r, err)
	}
	// Redis' clock and ours agree here to well under the slack.
	if d := (<-started).Sub(at); d < 280*time.Millisecond {
		t.Errorf("a task delayed by 300ms started after %v", d)
	}
	// A delayed task can be cancelled while it waits.
	c, err := b.c.Enqueue(ctx, UploadArgs{Path: "never"}, &client.EnqueueOpts{Queue: b.queue, Delay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := c.Cancel(ctx); err != nil || st != client.StateCancelled {
		t.Errorf("cancel a delayed task: %q, %v", st, err)
	}
	for _, tc := range []struct {
		opts client.EnqueueOpts
		want string
	}{
		{client.EnqueueOpts{Queue: b.queue, Delay: time.Second, ProcessAt: time.Now()}, "both set"},
		{client.EnqueueOpts{Queue: b.queue, Delay: -time.Second}, "must not be negative"},
	} {
		if _, err := b.c.Enqueue(ctx, UploadArgs{}, &tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error containing %q", tc.opts, err, tc.want)
		}
	}
	if _, err := h.ContinueWith(ctx, UploadArgs{}, &client.ContinueOpts{EnqueueOpts: client.EnqueueOpts{Delay: time.Second}}); err == nil || !strings.Contains(err.Error(), "not a group's members, joins or continuations") {
		t.Errorf("a delayed continuation: %v", err)
	}
}
