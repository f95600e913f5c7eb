package conformance

import (
	"testing"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/store"
)

// TestResendConformanceUpload runs the writes of package upload's resume
// records: beginning a record (and losing a race to another
// attempt's), recording a part, removing a record (and leaving another
// upload's).
func TestResendConformanceUpload(t *testing.T) {
	RunTable(t, uploadRows())
}

func uploadRows() []Row {
	task := func(r *Run) string { return "task-" + r.U }
	rec := func(id string) store.UploadRecord {
		return store.UploadRecord{ID: id, Bucket: "bkt", Object: "dir/obj", Dest: "s3://bkt/dir/obj",
			Fingerprint: "file:12:34:56", PartSize: 5 << 20, Size: 12 << 20}
	}
	// load puts the scripts in the server's cache, so that the rows' calls
	// are EVALSHA on every backend.
	load := func(r *Run) {
		r.Must(script.UpBegin.Load(r.Ctx, r.Env.RDB).Err())
		r.Must(script.UpPart.Load(r.Ctx, r.Env.RDB).Err())
		r.Must(script.UpEnd.Load(r.Ctx, r.Env.RDB).Err())
	}
	begin := func(id string) func(r *Run) {
		return func(r *Run) {
			load(r)
			got, err := store.UploadBegin(r.Ctx, r.Env.RDB, keys.ForQueue(r.Q), task(r), rec(id))
			r.Must(err)
			if got != id {
				r.T.Fatalf("setup: upload %s recorded, not %s", got, id)
			}
		}
	}
	// read notes the record as the store reads it.
	read := func(r *Run) {
		got, found, err := store.UploadRead(r.Ctx, r.Env.RDB, keys.ForQueue(r.Q), task(r))
		r.Note("record found=%v %+v %v", found, got, err)
	}
	part := store.UploadPart{MD5: "0123456789abcdef0123456789abcdef", SHA256: "ab", Size: 5 << 20, State: "st.cr"}
	return []Row{
		{Name: "upload.Begin", Setup: load, Op: func(r *Run) string {
			id, err := store.UploadBegin(r.Ctx, r.RDB, keys.ForQueue(r.Q), task(r), rec("first"))
			read(r)
			return Answer(id, err)
		}},
		{Name: "upload.Begin/raced", Setup: begin("first"), Op: func(r *Run) string {
			id, err := store.UploadBegin(r.Ctx, r.RDB, keys.ForQueue(r.Q), task(r), rec("second"))
			read(r)
			return Answer(id, err)
		}},
		{Name: "upload.PartDone", Setup: begin("first"), Op: func(r *Run) string {
			ok, err := store.UploadPartDone(r.Ctx, r.RDB, keys.ForQueue(r.Q), task(r), "first", 2, part)
			read(r)
			return Answer(ok, err)
		}},
		{Name: "upload.PartDone/other", Setup: begin("first"), Op: func(r *Run) string {
			ok, err := store.UploadPartDone(r.Ctx, r.RDB, keys.ForQueue(r.Q), task(r), "second", 2, part)
			read(r)
			return Answer(ok, err)
		}},
		{Name: "upload.End", Setup: func(r *Run) {
			begin("first")(r)
			_, err := store.UploadPartDone(r.Ctx, r.Env.RDB, keys.ForQueue(r.Q), task(r), "first", 1, part)
			r.Must(err)
		}, Op: func(r *Run) string {
			ok, err := store.UploadEnd(r.Ctx, r.RDB, keys.ForQueue(r.Q), task(r), "first")
			read(r)
			return Answer(ok, err)
		}},
		{Name: "upload.End/other", Setup: begin("first"), Op: func(r *Run) string {
			ok, err := store.UploadEnd(r.Ctx, r.RDB, keys.ForQueue(r.Q), task(r), "second")
			read(r)
			return Answer(ok, err)
		}},
	}
}
