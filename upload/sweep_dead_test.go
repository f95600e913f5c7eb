package upload_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/taskfleet/async/asynctest"
	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/s3fake"
	"github.com/taskfleet/async/upload"
	"github.com/taskfleet/async/worker"
)

// A task dead-lettered after its worker died mid-upload (here: poison, its
// one delivery allowed used up by a worker cut off from Redis) leaves its
// multipart upload open and recorded: no handler saw the task end. Sweep
// aborts it and removes the record.
func TestS3SweepAbortsAfterACrash(t *testing.T) {
	s3, err := s3fake.New(s3fake.Options{Buckets: []string{bucket}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s3.Close() })
	e := &env{t: t, s3: s3, root: t.TempDir()}
	e.f = asynctest.NewFleet(t, nil, &asynctest.Options{Worker: worker.Config{MaxDeliveries: 1}})
	e.cfg = upload.Config{
		Roots: []string{e.root},
		Redis: e.f.Redis(),
		S3: upload.S3Config{Endpoint: s3.Endpoint(), Insecure: true, PathStyle: true,
			AccessKey: s3.AccessKey(), SecretKey: s3.SecretKey()},
		PartSize:        ps,
		PartConcurrency: 2,
	}
	if e.h, err = upload.New(e.cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.h.Close)
	// Parts after the first are held until their request is given up (the
	// lost worker's handler's ctx ends), so the upload cannot finish.
	s3.SetFault(func(r *http.Request) *s3fake.Fault {
		if n := r.URL.Query().Get("partNumber"); n != "" && n != "1" {
			_, _ = io.Copy(io.Discard, r.Body)
			select {
			case <-r.Context().Done():
			case <-time.After(30 * time.Second):
			}
			return &s3fake.Fault{Status: 500, Code: "InternalError"}
		}
		return nil
	})
	ended := make(chan error, 4)
	loss := e.f.LoseWorker(upload.Args{}.Kind(), asynctest.LoseDuring)
	e.f.StartWorkers(2, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a upload.Args) (upload.Result, error) {
			r, err := e.h.Run(ctx, a)
			ended <- err
			return r, err
		})
	})
	p, _ := e.file("crash.bin", 3*ps, 41)
	ctx := context.Background()
	h, err := e.f.Client().Enqueue(ctx, upload.Args{Src: p, Dest: "s3://" + bucket + "/crash.bin"}, &client.EnqueueOpts{MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	if id := loss.Wait(); id != h.ID() {
		t.Fatalf("lost the worker of %s, want %s", id, h.ID())
	}
	e.f.WaitTask(h.ID(), client.StateDead)
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the lost worker's upload succeeded")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the lost worker's handler did not return within 30s")
	}
	rec, listed := e.record(h.ID())
	if open := s3.OpenUploads(); !rec || !listed || len(open) != 1 {
		t.Fatalf("dead after a crash: record %v listed %v open %v; want the upload left for the sweeper", rec, listed, open)
	}
	n, err := e.h.Sweep(ctx, h.Queue())
	if err != nil || n != 1 {
		t.Fatalf("sweep: %d aborted, %v; want 1", n, err)
	}
	e.noOpenUploads()
	if rec, listed := e.record(h.ID()); rec || listed {
		t.Fatalf("record left after the sweep: %v, listed %v", rec, listed)
	}
}
