package conformance

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
)

// durableClient is a client on r.RDB (through the proxy) with durable
// enqueue: WaitReplicas 1. The table's Redis has no replica, so every
// durable call ends with ErrNotReplicated, after the calls' writes.
func durableClient(r *Run) *client.Client {
	c, err := client.New(r.Ctx, r.RDB, &client.Config{Logger: quiet, WaitReplicas: 1, WaitTimeout: 10 * time.Millisecond})
	r.Must(err)
	r.T.Cleanup(func() { _ = c.Close() })
	return c
}

// shortText is an enqueue's error as the rows compare it: the counts of a
// NotReplicatedError (its text names the proxy's address, which differs
// from lane to lane), or the error.
func shortText(err error) error {
	var ne *client.NotReplicatedError
	if errors.As(err, &ne) {
		return fmt.Errorf("not replicated: %d of %d (unknown: %v)", ne.Acked, ne.Want, ne.Acked < 0)
	}
	return err
}

// The rows of durable enqueue (issue 21, client.Config.WaitReplicas): the
// enqueue scripts, then a replication mark (a SET of a throwaway key) and
// WAIT on the same connection. A lost reply of a script or of the mark is
// resent by the store on a new connection, scripts and mark again: the
// tasks are added once, and the answer (the handles, with
// ErrNotReplicated) is the clean run's.
func durableRows() []Row {
	return []Row{
		{Name: "EnqueueDurable/auto", Op: func(r *Run) string {
			h, err := durableClient(r).Enqueue(r.Ctx, Job{N: 1}, &client.EnqueueOpts{Queue: r.Q})
			r.Track(h)
			return Answer(HandleText(h), shortText(err))
		}},
		{Name: "EnqueueDurable/keyed", Op: func(r *Run) string {
			h, err := durableClient(r).Enqueue(r.Ctx, Job{N: 2}, &client.EnqueueOpts{Queue: r.Q, ID: "k-" + r.U})
			r.Track(h)
			return Answer(HandleText(h), shortText(err))
		}},
		{Name: "EnqueueDurable/duplicate",
			Setup: func(r *Run) { r.Track(r.enqueue(3, &client.EnqueueOpts{Queue: r.Q, ID: "k-" + r.U})) },
			Op: func(r *Run) string {
				h, err := durableClient(r).Enqueue(r.Ctx, Job{N: 3}, &client.EnqueueOpts{Queue: r.Q, ID: "k-" + r.U})
				r.Track(h)
				return Answer(HandleText(h), shortText(err))
			}},
		// Two queues: two script calls in one pipeline, one mark, one WAIT.
		{Name: "EnqueueManyDurable", Op: func(r *Run) string {
			specs := append(r.specs(r.Q, 1, 2), r.specs(r.Q2, 3)...)
			hs, err := durableClient(r).EnqueueMany(r.Ctx, specs)
			r.Track(hs...)
			out := make([]string, len(hs))
			for i, h := range hs {
				out[i] = HandleText(h)
			}
			return Answer(strings.Join(out, " "), shortText(err))
		}},
	}
}

func TestResendConformanceDurable(t *testing.T) {
	RunTable(t, durableRows())
}

// WAIT writes nothing, so the table does not drop its reply: here it is
// dropped once and twice. The store sends the mark and WAIT again on a new
// connection (the mark's write is again past the tasks'), and the call
// answers as it would have: the task added once, its handle, and
// ErrNotReplicated with the counts (the Redis has no replica).
func TestDurableEnqueueWaitReplyLost(t *testing.T) {
	env := testenv.IsolatedRedis(t, 0) // a miniredis of its own
	for _, times := range []int{0, 1, 2} {
		t.Run(fmt.Sprintf("x%d", times), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			p := testenv.NewFaultProxy(t, env.Addr)
			rdb := p.NewClient(t, env)
			c, err := client.New(ctx, rdb, &client.Config{Logger: quiet, WaitReplicas: 1, WaitTimeout: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			q := testenv.Queue(t)
			p.DropReply(testenv.MatchName("WAIT"), 1, times)
			h, err := c.Enqueue(ctx, Job{N: 1}, &client.EnqueueOpts{Queue: q, ID: "w"})
			if got := p.Dropped(); got != times {
				t.Fatalf("%d WAIT replies dropped; want %d", got, times)
			}
			var ne *client.NotReplicatedError
			if !errors.As(err, &ne) || ne.Acked != 0 || ne.Want != 1 {
				t.Fatalf("Enqueue = %v; want ErrNotReplicated, 0 of 1 replicas", err)
			}
			if h == nil || h.ID() != q+"/w" || h.Duplicate() {
				t.Fatalf("Enqueue's handle = %v; want %s/w, not a duplicate", h, q)
			}
			if n, err := env.RDB.XLen(ctx, keys.ForQueue(q).Stream()).Result(); err != nil || n != 1 {
				t.Fatalf("the stream holds %d entries (%v); want the one task", n, err)
			}
			waits := 0
			for _, cmd := range p.Commands() {
				if cmd.Name == "WAIT" {
					waits++
				}
			}
			if waits != times+1 {
				t.Fatalf("%d WAIT sent; want %d (one, and one per lost reply)", waits, times+1)
			}
		})
	}
}
