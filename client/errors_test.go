package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// client.ErrPayloadTooLarge and worker.ErrPayloadTooLarge are one value,
// matched end to end: by the error of an enqueue over the client's limit,
// and by the Outcome of a task a worker dead-lettered for its payload.
func TestPayloadTooLargeMatchesEndToEnd(t *testing.T) {
	t.Parallel()
	if client.ErrPayloadTooLarge != worker.ErrPayloadTooLarge {
		t.Fatal("client.ErrPayloadTooLarge and worker.ErrPayloadTooLarge are two values")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := testenv.Redis(t)
	q := testenv.Queue(t)

	// Refused by the client.
	small, err := client.New(context.Background(), env.RDB, &client.Config{MaxPayloadBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	_, err = small.Enqueue(ctx, PingArgs{Blob: make([]byte, 200)}, &client.EnqueueOpts{Queue: q})
	if !errors.Is(err, client.ErrPayloadTooLarge) || !errors.Is(err, worker.ErrPayloadTooLarge) {
		t.Fatalf("enqueue over the client's limit: %v; want it to match ErrPayloadTooLarge", err)
	}

	// Accepted by a client with the default limit, refused by the worker.
	c := testenv.Client(t, env)
	testenv.StartWorker(t, env.RDB, q, &worker.Config{MaxPayloadBytes: 64}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a PingArgs) (string, error) {
			if a.Msg == "fail" {
				return "", worker.Permanent(errors.New("some other reason"))
			}
			return a.Msg, nil
		})
	}, true)
	big, err := c.Enqueue(ctx, PingArgs{Blob: make([]byte, 200)}, &client.EnqueueOpts{Queue: q})
	if err != nil {
		t.Fatal(err)
	}
	_, err = big.Outcome(ctx)
	if !errors.Is(err, client.ErrDead) || !errors.Is(err, client.ErrPayloadTooLarge) || !errors.Is(err, worker.ErrPayloadTooLarge) {
		t.Fatalf("a task over the worker's limit ended with %v; want dead, matching ErrPayloadTooLarge", err)
	}
	if !strings.Contains(err.Error(), "exceeds the worker's limit of 64") {
		t.Errorf("error %q does not give the worker's limit", err)
	}

	// A task dead for another reason does not match it.
	other, err := c.Enqueue(ctx, PingArgs{Msg: "fail"}, &client.EnqueueOpts{Queue: q})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = other.Outcome(ctx); !errors.Is(err, client.ErrDead) || errors.Is(err, client.ErrPayloadTooLarge) {
		t.Fatalf("a task dead for another reason ended with %v; want dead, not matching ErrPayloadTooLarge", err)
	}
}
