package inspect_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// Job is the task of these tests.
type Job struct {
	N    int  `msgpack:"n"`
	Fail bool `msgpack:"fail"`
}

func (Job) Kind() string { return "inspect.job" }

func queueOf(t *testing.T, in *inspect.Inspector, name string) inspect.QueueInfo {
	t.Helper()
	q, err := in.Queue(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// The counts after a known workload: in a queue no worker serves, tasks
// enqueued now wait, a delayed one is scheduled, and a waiting one that is
// cancelled leaves the count (it read -1 in `worker queues` once); then a
// worker takes them, one at a time, one of them to the dead letters.
func TestQueueCounts(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	var hs []*client.Handle
	for _, j := range []Job{{N: 1}, {N: 2}, {N: 3, Fail: true}} {
		h, err := c.Enqueue(ctx, j, &client.EnqueueOpts{Queue: queue})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	if _, err := c.Enqueue(ctx, Job{N: 4}, &client.EnqueueOpts{Queue: queue, Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if st, err := hs[0].Cancel(ctx); err != nil || st != client.StateCancelled {
		t.Fatalf("cancel: %v, %v", st, err)
	}
	got := queueOf(t, in, queue)
	if want := (inspect.QueueInfo{Queue: queue, Waiting: 2, Scheduled: 1, StreamLength: 2, Read: got.Read}); !reflect.DeepEqual(got, want) {
		t.Errorf("unserved queue after a cancel: %+v, want %+v", got, want)
	}
	if got.Read != 0 && got.Read != -1 {
		t.Errorf("Read = %d before any worker, want 0 or -1 (unknown)", got.Read)
	}
	qs, err := in.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(qs, func(q inspect.QueueInfo) bool { return q.Queue == queue }); i < 0 || !reflect.DeepEqual(qs[i], got) {
		t.Errorf("Queues does not list %+v: %+v", got, qs)
	}
	if !slices.IsSortedFunc(qs, func(a, b inspect.QueueInfo) int { return strings.Compare(a.Queue, b.Queue) }) {
		t.Errorf("Queues not sorted by name: %+v", qs)
	}

	release := make(chan struct{})
	started := make(chan int, 2)
	testenv.StartWorker(t, e.RDB, queue, &worker.Config{Concurrency: 1, FetchBatch: 1}, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, j Job) (int, error) {
			started <- j.N
			<-release
			if j.Fail {
				return 0, worker.Permanent(errors.New("asked to fail"))
			}
			return j.N, nil
		})
	}, false)
	<-started
	testenv.Eventually(t, 10*time.Second, "one task running", func() bool {
		n, err := in.Running(ctx, queue)
		return err == nil && n == 1
	})
	if got := queueOf(t, in, queue); got.Running != 1 || got.Waiting+got.Running != 2 || got.Scheduled != 1 {
		t.Errorf("one task running: %+v", got)
	}
	close(release)
	for _, h := range hs[1:] {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, _ = h.Outcome(wctx) // one succeeds, one dies
		cancel()
	}
	testenv.Eventually(t, 10*time.Second, "the queue drained", func() bool {
		q := queueOf(t, in, queue)
		return q.Waiting == 0 && q.Running == 0
	})
	got = queueOf(t, in, queue)
	if got.Scheduled != 1 || got.Dead != 1 || got.StreamLength > 2 {
		t.Errorf("drained: %+v, want 1 scheduled, 1 dead, at most 2 entries", got)
	}
	if got.Read != 3 && got.Read != -1 { // the cancelled entry counts as passed
		t.Errorf("drained: Read = %d, want 3 (or -1: unknown)", got.Read)
	}
}

// DeleteQueue refuses a queue that holds tasks unless forced; a deleted
// queue reads as empty, and is still listed.
func TestDeleteQueue(t *testing.T) {
	t.Parallel()
	e := testenv.Redis(t)
	ctx := context.Background()
	queue := testenv.Queue(t)
	c := testenv.Client(t, e)
	in := inspect.New(e.RDB)
	if _, err := c.Enqueue(ctx, Job{N: 1}, &client.EnqueueOpts{Queue: queue, Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := in.DeleteQueue(ctx, queue, false); !errors.Is(err, inspect.ErrQueueNotEmpty) {
		t.Fatalf("DeleteQueue of a queue with a scheduled task: %v, want ErrQueueNotEmpty", err)
	}
	if err := in.DeleteQueue(ctx, queue, true); err != nil {
		t.Fatal(err)
	}
	if got := queueOf(t, in, queue); !reflect.DeepEqual(got, inspect.QueueInfo{Queue: queue}) {
		t.Errorf("deleted queue reads %+v", got)
	}
	qs, err := in.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(qs, func(q inspect.QueueInfo) bool { return reflect.DeepEqual(q, inspect.QueueInfo{Queue: queue}) }) {
		t.Errorf("Queues does not list the deleted queue %s with zero counts: %+v", queue, qs)
	}
	if err := in.DeleteQueue(ctx, queue, false); err != nil {
		t.Errorf("DeleteQueue of an empty queue: %v", err)
	}
}

// Bad queue names are refused before anything is sent.
func TestBadQueueName(t *testing.T) {
	t.Parallel()
	in := inspect.New(testenv.Redis(t).RDB)
	ctx := context.Background()
	_, err1 := in.Queue(ctx, "a b")
	_, err2 := in.Running(ctx, "")
	err3 := in.DeleteQueue(ctx, "a{b}", true)
	for _, err := range []error{err1, err2, err3} {
		if !errors.Is(err, client.ErrInvalidName) {
			t.Errorf("bad name: %v, want ErrInvalidName", err)
		}
	}
}

// Decode reads msgpack into plain values, and reports bytes that announce
// more than they hold instead of allocating for them.
func TestDecode(t *testing.T) {
	t.Parallel()
	v, err := inspect.Decode([]byte{0x82, 0xa1, 'n', 0x2a, 0xa1, 's', 0xa2, 'h', 'i'})
	if err != nil {
		t.Fatal(err)
	}
	m, ok := v.(map[string]any)
	if !ok || m["s"] != "hi" || m["n"] != int8(42) && m["n"] != int64(42) && m["n"] != uint8(42) {
		t.Errorf("Decode = %#v", v)
	}
	if _, err := inspect.Decode([]byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0}); err == nil || !strings.Contains(err.Error(), "4294967295 elements") {
		t.Errorf("Decode of an array announcing 2^32-1 elements: %v", err)
	}
}
