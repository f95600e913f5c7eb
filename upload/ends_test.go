package upload_test

import (
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/taskfleet/async/asynctest"
	"github.com/taskfleet/async/internal/s3fake"
	"github.com/taskfleet/async/upload"
	"github.com/taskfleet/async/worker"
)

// An attempt stopped by its worker (a shutdown, a lease that lapsed) hands
// the task back with the same attempt number, so even on the last attempt
// the task goes on: its multipart upload and its record must stay, for the
// next run (this worker's or another's, which may have taken the lease
// over) to resume.
func TestS3StoppedLastAttemptKeepsTheUpload(t *testing.T) {
	for _, cause := range []error{worker.ErrShutdown, worker.ErrLeaseLost} {
		t.Run(cause.Error(), func(t *testing.T) {
			e := newEnv(t, nil, nil)
			p, _ := e.file("s.bin", 2*ps+1, 31)
			ctx, stop := context.WithCancelCause(context.Background())
			defer stop(nil)
			var once sync.Once
			e.s3.SetOnPart(func(pe s3fake.PartEvent) {
				once.Do(func() { stop(cause) })
			})
			// Parts after the first are held until their request is given
			// up (the handler's ctx ended), so the upload cannot finish.
			e.s3.SetFault(func(r *http.Request) *s3fake.Fault {
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
			r := e.run(upload.Args{Src: p, Dest: "s3://" + bucket + "/s.bin"},
				&asynctest.RunOpts{Attempt: 3, MaxAttempts: 3, Context: ctx})
			if r.Err == nil {
				t.Fatal("the stopped attempt succeeded")
			}
			rec, listed := e.record(r.Task.ID)
			open := e.s3.OpenUploads()
			if !rec || !listed || len(open) != 1 {
				t.Fatalf("after the last attempt stopped (%v): record %v listed %v open %v; want the record, listed, and one open upload (err: %v)",
					cause, rec, listed, open, r.Err)
			}
			if st := e.s3.Stats(); st.Aborted != 0 {
				t.Fatalf("%d uploads aborted, want none", st.Aborted)
			}
		})
	}
}
