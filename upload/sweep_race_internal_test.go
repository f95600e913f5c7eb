package upload

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/taskfleet/async/asynctest"
	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/s3fake"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/worker"
)

// The sweeper read a task's state as dead; RetryDead put it back before
// the sweeper removed its record: the removal, checked against the task's
// state in the same call, leaves the record (and the upload, which the new
// run resumes), and nothing is aborted.
func TestSweepSparesATaskRetriedMeanwhile(t *testing.T) {
	s3, err := s3fake.New(s3fake.Options{Buckets: []string{"bkt"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s3.Close() })
	f := asynctest.NewFleet(t, nil, nil)
	h, err := New(Config{Roots: []string{t.TempDir()}, Redis: f.Redis(),
		S3: S3Config{Endpoint: s3.Endpoint(), Insecure: true, PathStyle: true, AccessKey: s3.AccessKey(), SecretKey: s3.SecretKey()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	// The first run fails for good; the retried one waits for the test's
	// end (so the task does not end again before the sweep).
	var runs atomic.Int64
	release := make(chan struct{})
	f.StartWorkers(1, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Args) (Result, error) {
			if runs.Add(1) == 1 {
				return Result{}, worker.Permanent(errors.New("dead at once"))
			}
			select {
			case <-release:
			case <-ctx.Done():
			}
			return Result{}, errors.New("released")
		})
	})
	defer close(release)
	ctx := context.Background()
	th, err := f.Client().Enqueue(ctx, Args{Src: "/nowhere", Dest: "s3://bkt/o"}, &client.EnqueueOpts{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	f.WaitTask(th.ID(), client.StateDead)
	q := keys.ForQueue(th.Queue())
	_, key, _ := strings.Cut(th.ID(), "/")
	if _, err := store.UploadBegin(ctx, f.Redis(), q, key, store.UploadRecord{ID: "u-1", Bucket: "bkt", Object: "o",
		Dest: "s3://bkt/o", PartSize: 5 << 20, Size: 6 << 20}); err != nil {
		t.Fatal(err)
	}
	// Sweep saw it dead here; now it is retried.
	if _, err := f.Client().RetryDead(ctx, th.ID()); err != nil {
		t.Fatal(err)
	}
	aborted, err := h.sweepOne(ctx, q, key)
	if err != nil || aborted {
		t.Fatalf("sweepOne on a retried task: aborted %v, %v; want nothing done", aborted, err)
	}
	if _, found, err := store.UploadRead(ctx, f.Redis(), q, key); err != nil || !found {
		t.Fatalf("record after the sweep: found %v, %v; want it kept", found, err)
	}
	if st := s3.Stats(); st.Aborted != 0 {
		t.Fatalf("%d aborts at the store, want none", st.Aborted)
	}
}
