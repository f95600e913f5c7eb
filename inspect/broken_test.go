package inspect_test

import (
	"context"
	"strings"
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
)

// A queue whose keys Redis refuses to read (its stream's key holds a
// string) is listed with its error and zero counts; the other queues keep
// their counts, and Queue of it returns the error.
func TestQueuesListsAnUnreadableQueue(t *testing.T) {
	t.Parallel()
	env := testenv.IsolatedRedis(t, 0) // a broken queue would break other tests' listings
	ctx := context.Background()
	c := testenv.Client(t, env)
	good, bad := testenv.Queue(t), testenv.Queue(t)+"-broken"
	for _, q := range []string{good, bad} {
		if _, err := c.Enqueue(ctx, Job{}, &client.EnqueueOpts{Queue: q}); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.RDB.Set(ctx, keys.ForQueue(bad).Stream(), "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	in := inspect.New(env.RDB)
	qs, err := in.Queues(ctx)
	if err != nil {
		t.Fatalf("Queues failed for all: %v", err)
	}
	found := 0
	for _, q := range qs {
		switch q.Queue {
		case good:
			found++
			if q.Error != "" || q.Waiting != 1 {
				t.Errorf("%s: waiting %d, error %q; want 1 waiting, no error", good, q.Waiting, q.Error)
			}
		case bad:
			found++
			if !strings.Contains(q.Error, "WRONGTYPE") || q.Waiting != 0 {
				t.Errorf("%s: waiting %d, error %q; want its WRONGTYPE error and zeros", bad, q.Waiting, q.Error)
			}
		}
	}
	if found != 2 {
		t.Fatalf("listed %d of the 2 queues: %+v", found, qs)
	}
	if _, err := in.Queue(ctx, bad); err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("Queue(%s): %v; want its error", bad, err)
	}
}
