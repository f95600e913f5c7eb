package client_test

import (
	"context"
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/testenv"
)

type placeBenchArgs struct{ N int }

func (placeBenchArgs) Kind() string { return "place.bench" }

// BenchmarkEnqueueSequentialPlain is one Enqueue after the other to a queue
// that is not sharded: the cost a producer pays per task for asking whether
// the queue is sharded (issue 21) is a cache lookup.
func BenchmarkEnqueueSequentialPlain(b *testing.B) {
	env := testenv.Redis(b)
	c := testenv.Client(b, env)
	q := testenv.Queue(b)
	ctx := context.Background()
	opts := &client.EnqueueOpts{Queue: q, Retention: 0}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Enqueue(ctx, placeBenchArgs{N: i}, opts); err != nil {
			b.Fatal(err)
		}
	}
}
