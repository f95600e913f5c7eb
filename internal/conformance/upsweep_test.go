package conformance

import (
	"testing"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
)

// TestResendConformanceUploadSweep runs the sweeper's removal of an upload
// record (upsweep.lua): of a dead task, of an unknown one, and
// not of a task that runs again.
func TestResendConformanceUploadSweep(t *testing.T) {
	task := func(r *Run) string { return "task-" + r.U }
	setup := func(st string) func(r *Run) {
		return func(r *Run) {
			r.Must(script.UpBegin.Load(r.Ctx, r.Env.RDB).Err())
			r.Must(script.UpSweep.Load(r.Ctx, r.Env.RDB).Err())
			q := keys.ForQueue(r.Q)
			_, err := store.UploadBegin(r.Ctx, r.Env.RDB, q, task(r), store.UploadRecord{ID: "u1", Bucket: "bkt", Object: "obj",
				Dest: "s3://bkt/obj", PartSize: 5 << 20, Size: 6 << 20})
			r.Must(err)
			if st != "" {
				r.Must(r.Env.RDB.HSet(r.Ctx, q.Task(task(r)), "st", st).Err())
			}
		}
	}
	op := func(r *Run) string {
		q := keys.ForQueue(r.Q)
		ok, err := store.UploadSweep(r.Ctx, r.RDB, q, task(r), "u1")
		got, found, rerr := store.UploadRead(r.Ctx, r.Env.RDB, q, task(r))
		r.Note("record found=%v %+v %v", found, got, rerr)
		return Answer(ok, err)
	}
	RunTable(t, []Row{
		{Name: "upload.Sweep/dead", Setup: setup("dead"), Op: op},
		{Name: "upload.Sweep/unknown", Setup: setup(""), Op: op},
		{Name: "upload.Sweep/pending", Setup: setup("pending"), Op: op},
	})
}
