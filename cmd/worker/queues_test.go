package main

import (
	"context"
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/testenv"
)

// `worker queues` counts exactly in a queue no worker serves after a
// waiting task is cancelled: the cancel deletes the task's stream entry,
// after which Redis reports no lag for the group, and the command printed
// -1 waiting (on real Redis; miniredis' lag ignores deletes and reads).
func TestCLIQueuesAfterCancel(t *testing.T) {
	tg := cliTarget(t)
	queue := testenv.Queue(t)
	c := testenv.Client(t, tg.Env)
	ctx := context.Background()
	var hs []*client.Handle
	for i := range 3 {
		h, err := c.Enqueue(ctx, Echo{N: i}, &client.EnqueueOpts{Queue: queue})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	if st, err := hs[1].Cancel(ctx); err != nil || st != client.StateCancelled {
		t.Fatalf("cancel: %v, %v", st, err)
	}
	rows := jsonOf[[]queueRow](t, tg.cmd(t, 0, "queues", "-json"))
	for _, r := range rows {
		if r.Queue == queue {
			if r.Waiting != 2 || r.Running != 0 || r.Scheduled != 0 || r.Dead != 0 {
				t.Errorf("worker queues: %+v, want 2 waiting, none running, scheduled or dead", r)
			}
			return
		}
	}
	t.Errorf("worker queues does not list %s", queue)
}
