package upload_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/taskfleet/async/asynctest"
	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/s3fake"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/ratelimit"
	"github.com/taskfleet/async/upload"
	"github.com/taskfleet/async/worker"
)

const (
	bucket = "bkt"
	mib    = 1 << 20
	ps     = 5 * mib // the smallest part S3 allows
)

// env is an S3 server, a fleet (its Redis and client) and a handler
// uploading into the server, with files under root.
type env struct {
	t    *testing.T
	f    *asynctest.Fleet
	s3   *s3fake.Server
	h    *upload.Handler
	root string
	cfg  upload.Config
}

func newEnv(t *testing.T, register func(e *env) func(w *worker.Worker), mod func(c *upload.Config)) *env {
	t.Helper()
	s3, err := s3fake.New(s3fake.Options{Buckets: []string{bucket}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s3.Close() })
	e := &env{t: t, s3: s3, root: t.TempDir()}
	var reg func(w *worker.Worker)
	var h *upload.Handler
	if register != nil {
		reg = func(w *worker.Worker) { register(e)(w) }
	}
	// The handler needs the fleet's Redis, and the fleet's workers need the
	// handler: the fleet starts its workers after this sets e.h.
	e.f = asynctest.NewFleet(t, nil, nil)
	e.cfg = upload.Config{
		Roots: []string{e.root},
		Redis: e.f.Redis(),
		S3: upload.S3Config{Endpoint: s3.Endpoint(), Insecure: true, PathStyle: true,
			AccessKey: s3.AccessKey(), SecretKey: s3.SecretKey()},
		PartSize:        ps,
		PartConcurrency: 2,
	}
	if mod != nil {
		mod(&e.cfg)
	}
	h, err = upload.New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.h = h
	t.Cleanup(h.Close)
	if reg != nil {
		e.f.StartWorkers(1, reg)
	}
	return e
}

// file writes size bytes of seeded noise at name under root.
func (e *env) file(name string, size int, seed uint64) (string, []byte) {
	e.t.Helper()
	data := noise(size, seed)
	p := filepath.Join(e.root, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p, data
}

func noise(size int, seed uint64) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func crc32cHex(b []byte) string {
	return fmt.Sprintf("%08x", crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
}

// object reads what the server stores at key and fails unless it is want.
func (e *env) object(key string, want []byte) {
	e.t.Helper()
	got, _, err := e.s3.Object(bucket, key)
	if err != nil {
		e.t.Fatalf("object %s: %v", key, err)
	}
	if !bytes.Equal(got, want) {
		e.t.Fatalf("object %s: %d bytes stored, not the %d of the source (sha %s, want %s)", key, len(got), len(want), sum(got), sum(want))
	}
}

// record reports whether the task has a resume record, and whether its
// queue lists it.
func (e *env) record(id string) (bool, bool) {
	e.t.Helper()
	q, key, _ := strings.Cut(id, "/")
	kq := keys.ForQueue(q)
	ctx := context.Background()
	n, err := e.f.Redis().Exists(ctx, kq.Upload(key)).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	_, zerr := e.f.Redis().ZScore(ctx, kq.Uploads(), key).Result()
	return n == 1, zerr == nil
}

// cutAfterTwoParts makes the server cut every part request from the third
// on after 1 MiB of its body, once parts 1 and 2 are stored (so that the
// cut does not stop part 2 on the way: the parts stored are 1 and 2).
func (e *env) cutAfterTwoParts() {
	var mu sync.Mutex
	stored := map[int]bool{}
	both := make(chan struct{})
	e.s3.SetOnPart(func(p s3fake.PartEvent) {
		mu.Lock()
		defer mu.Unlock()
		stored[p.Number] = true
		if stored[1] && stored[2] && both != nil {
			close(both)
			both = nil
		}
	})
	wait := both
	e.s3.SetFault(func(r *http.Request) *s3fake.Fault {
		if n := r.URL.Query().Get("partNumber"); n != "" && n != "1" && n != "2" {
			select {
			case <-wait:
			case <-time.After(30 * time.Second):
				e.t.Error("parts 1 and 2 were not stored within 30s")
			}
			// Cut once the part's body has begun, whatever its size: a
			// cut after a MiB let a short last part (5 or 99 bytes) be
			// stored when the source had been read that far before the
			// attempt failed, and the resume then rightly kept it (a CI
			// run saw Resumed two parts and 5 bytes).
			return &s3fake.Fault{Cut: true, CutAfter: 1}
		}
		return nil
	})
}

func (e *env) noOpenUploads() {
	e.t.Helper()
	if open := e.s3.OpenUploads(); len(open) > 0 {
		e.t.Fatalf("multipart uploads left open: %v", open)
	}
}

// run runs one attempt of the handler with opts.
func (e *env) run(a upload.Args, opts *asynctest.RunOpts) *asynctest.RunResult[upload.Result] {
	e.t.Helper()
	return asynctest.Run(e.f, e.h.Run, a, opts)
}

// Small objects go in one PUT, larger ones in parts; both come back with
// their whole-object SHA-256 and CRC32C, the store's ETag, what was checked,
// and no record or open upload left.
func TestS3SingleAndMultipart(t *testing.T) {
	e := newEnv(t, nil, nil)
	small, sdata := e.file("small.bin", 100_000, 1)
	r := e.run(upload.Args{Src: small, Dest: "s3://" + bucket + "/dir/small.bin"}, nil)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	md := md5.Sum(sdata)
	want := upload.Result{Bytes: int64(len(sdata)), SHA256: sum(sdata), CRC32C: crc32cHex(sdata), Dest: "s3://" + bucket + "/dir/small.bin",
		ETag: hex.EncodeToString(md[:]), Verified: "etag", VersionID: r.Value.VersionID}
	if r.Value != want {
		t.Fatalf("single PUT: %+v\nwant %+v", r.Value, want)
	}
	e.object("dir/small.bin", sdata)
	// (Verified was "size,etag" when a HEAD followed every PUT; now the
	// reply's ETag is the check, and HeadAfterPut brings the HEAD back.)
	headPut, err := upload.New(func() upload.Config { c := e.cfg; c.S3.HeadAfterPut = true; return c }())
	if err != nil {
		t.Fatal(err)
	}
	defer headPut.Close()
	r = asynctest.Run(e.f, headPut.Run, upload.Args{Src: small, Dest: "s3://" + bucket + "/dir/small.bin"}, nil)
	want.VersionID = r.Value.VersionID
	if want.Verified = "size,etag"; r.Err != nil || r.Value != want {
		t.Fatalf("single PUT with HeadAfterPut: %+v %v\nwant %+v", r.Value, r.Err, want)
	}

	big, bdata := e.file("big.bin", 2*ps+12345, 2)
	r = e.run(upload.Args{Src: big, Dest: "s3://" + bucket + "/big.bin"}, nil)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	all := md5.New()
	for off := 0; off < len(bdata); off += ps {
		s := md5.Sum(bdata[off:min(off+ps, len(bdata))])
		all.Write(s[:])
	}
	want = upload.Result{Bytes: int64(len(bdata)), SHA256: sum(bdata), CRC32C: crc32cHex(bdata), Dest: "s3://" + bucket + "/big.bin",
		ETag: hex.EncodeToString(all.Sum(nil)) + "-3", Parts: 3, Verified: "size,etag", VersionID: r.Value.VersionID}
	if r.Value != want {
		t.Fatalf("multipart: %+v\nwant %+v", r.Value, want)
	}
	if pg := r.Progress; pg.Done != int64(len(bdata)) || pg.Total != int64(len(bdata)) {
		t.Errorf("last progress %d of %d, want %d of %d", pg.Done, pg.Total, len(bdata), len(bdata))
	}
	e.object("big.bin", bdata)
	st := e.s3.Stats()
	if st.PutObjects != 2 || st.Parts != 3 || st.Completed != 1 || st.PartBytes != int64(len(bdata)) {
		t.Fatalf("server stats %+v", st)
	}
	e.noOpenUploads()
	if rec, listed := e.record(r.Task.ID); rec || listed {
		t.Fatalf("record left after success: %v, listed %v", rec, listed)
	}

	// Without the HEAD: one request per small object, with SkipHead and
	// by default.
	noHead, err := upload.New(func() upload.Config { c := e.cfg; c.S3.SkipHead = true; return c }())
	if err != nil {
		t.Fatal(err)
	}
	defer noHead.Close()
	for _, run := range []func(context.Context, upload.Args) (upload.Result, error){noHead.Run, e.h.Run} {
		before := e.s3.Stats().Requests
		r = asynctest.Run(e.f, run, upload.Args{Src: small, Dest: "s3://" + bucket + "/nohead"}, nil)
		if r.Err != nil || r.Value.Verified != "etag" || r.Value.ETag != hex.EncodeToString(md[:]) {
			t.Fatalf("without HEAD: %+v %v", r.Value, r.Err)
		}
		if n := e.s3.Stats().Requests - before; n != 1 {
			t.Fatalf("without HEAD: %d requests for a small object, want 1", n)
		}
	}
}

// Content type (given, or from the extension), user metadata, storage
// class and server-side encryption reach the store; defaults come from
// S3Config.
func TestS3ObjectOptions(t *testing.T) {
	// Storage classes the server keeps: gofakes3 any, MinIO only STANDARD
	// and REDUCED_REDUNDANCY, whose HEAD omits the class for STANDARD (as
	// S3 does).
	def, other, otherShown := "STANDARD_IA", "GLACIER", "GLACIER"
	if s3fake.UpstreamFromEnv() != "" {
		def, other, otherShown = "REDUCED_REDUNDANCY", "STANDARD", ""
	}
	e := newEnv(t, nil, func(c *upload.Config) { c.S3.StorageClass = def })
	p, _ := e.file("a.json", 1000, 3)
	for _, tc := range []struct {
		a                 upload.Args
		ctype, class, sse string
	}{
		{upload.Args{Src: p, Dest: "s3://" + bucket + "/a.json", Metadata: map[string]string{"owner": "fleet", "Run-Id": "7"}},
			"application/json", def, ""},
		{upload.Args{Src: p, Dest: "s3://" + bucket + "/b", ContentType: "text/plain", StorageClass: other, SSE: "AES256"},
			"text/plain", otherShown, "AES256"},
		{upload.Args{Src: p, Dest: "s3://" + bucket + "/c"}, "application/octet-stream", def, ""},
	} {
		if r := e.run(tc.a, nil); r.Err != nil {
			t.Fatal(r.Err)
		}
		_, key, _ := strings.Cut(strings.TrimPrefix(tc.a.Dest, "s3://"), "/")
		info, err := e.s3.Info(bucket, key)
		if err != nil {
			t.Fatal(err)
		}
		if info.ContentType != tc.ctype || info.StorageClass != tc.class || info.SSE != tc.sse {
			t.Errorf("%s: content type %q class %q sse %q, want %q %q %q", key, info.ContentType, info.StorageClass, info.SSE, tc.ctype, tc.class, tc.sse)
		}
		// Metadata keys are HTTP header names: their case is not kept.
		for k, v := range tc.a.Metadata {
			if got := info.Meta[http.CanonicalHeaderKey(k)]; got != v {
				t.Errorf("%s: metadata %s = %q, want %q (all: %v)", key, k, got, v, info.Meta)
			}
		}
	}
	// SSE-KMS ETags are not MD5s: not compared. The key is one the server
	// knows (any on gofakes3).
	kid := e.s3.KMSKeyID()
	if kid == "" {
		t.Fatalf("no KMS key id: set %s to a key of the upstream's KMS", s3fake.EnvKMSKeyID)
	}
	r := e.run(upload.Args{Src: p, Dest: "s3://" + bucket + "/kms", SSE: "aws:kms", SSEKMSKeyID: kid}, nil)
	if r.Err != nil || r.Value.Verified != "size" {
		t.Fatalf("SSE-KMS: %+v %v, want verified \"size\"", r.Value, r.Err)
	}
	if info, err := e.s3.Info(bucket, "kms"); err != nil || info.SSE != "aws:kms" {
		t.Fatalf("SSE-KMS: stored %+v %v", info, err)
	}
	var perm *worker.PermanentError
	for _, a := range []upload.Args{
		{Src: p, Dest: "s3://" + bucket + "/d", SSE: "rot13"},
		{Src: p, Dest: "s3://" + bucket + "/d", SSEKMSKeyID: "k"},
		{Src: p, Dest: "s3:///d"},
		{Src: p, Dest: "s3://" + bucket},
		{Src: p, Dest: "s3://" + bucket + "/"},
		{Src: p, Dest: "s3://Bad_Bucket/d"},
		{Src: p, Dest: "s3://nosuchbucket/d"},
		{Src: filepath.Join(e.root, "missing"), Dest: "s3://" + bucket + "/d"},
		{Src: "/etc/passwd", Dest: "s3://" + bucket + "/d"},
	} {
		if r := e.run(a, nil); !errors.As(r.Err, &perm) {
			t.Errorf("%+v: %v, want a permanent error", a, r.Err)
		}
	}
}

// With Checksums, every part and single PUT carries its SHA-256, which the
// store verifies and keeps.
func TestS3Checksums(t *testing.T) {
	e := newEnv(t, nil, func(c *upload.Config) { c.S3.Checksums = true })
	small, _ := e.file("s", 1000, 4)
	r := e.run(upload.Args{Src: small, Dest: "s3://" + bucket + "/s"}, nil)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	info, err := e.s3.Info(bucket, "s")
	if err != nil {
		t.Fatal(err)
	}
	if info.Checksums["SHA256"] == "" {
		t.Fatalf("single PUT: no SHA-256 kept: %v", info.Checksums)
	}
	var mu sync.Mutex
	var uid string
	e.s3.SetOnPart(func(p s3fake.PartEvent) { mu.Lock(); uid = p.UploadID; mu.Unlock() })
	big, bdata := e.file("b", ps+1, 5)
	r = e.run(upload.Args{Src: big, Dest: "s3://" + bucket + "/b"}, nil)
	if r.Err != nil || r.Value.SHA256 != sum(bdata) || r.Value.Parts != 2 {
		t.Fatalf("multipart: %+v %v", r.Value, r.Err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range e.s3.Parts(uid) {
		if p.Checksums["SHA256"] == "" {
			t.Errorf("part %d: no SHA-256 sent: %+v", p.Number, p)
		}
	}
	e.object("b", bdata)
}

// A source that changes while it is uploaded fails the attempt; the
// upload is aborted and its record removed, so the next attempt starts
// over (and succeeds on the new content).
func TestS3SourceChangedMidUpload(t *testing.T) {
	e := newEnv(t, nil, nil)
	p, _ := e.file("c.bin", 3*ps, 6)
	var changed atomic.Bool
	e.s3.SetOnPart(func(pe s3fake.PartEvent) {
		if pe.Number == 1 && changed.CompareAndSwap(false, true) {
			if err := os.WriteFile(p, noise(3*ps, 7), 0o644); err != nil {
				t.Error(err)
			}
		}
	})
	opts := &asynctest.RunOpts{Attempt: 1, MaxAttempts: 5}
	r := e.run(upload.Args{Src: p, Dest: "s3://" + bucket + "/c.bin"}, opts)
	var perm *worker.PermanentError
	if r.Err == nil || errors.As(r.Err, &perm) || !strings.Contains(r.Err.Error(), "source changed") {
		t.Fatalf("attempt with a changing source: %v, want a retried error saying the source changed", r.Err)
	}
	e.noOpenUploads()
	if rec, listed := e.record(r.Task.ID); rec || listed {
		t.Fatalf("record left: %v, listed %v", rec, listed)
	}
	e.s3.SetOnPart(nil)
	now, _ := os.ReadFile(p)
	r = e.run(upload.Args{Src: p, Dest: "s3://" + bucket + "/c.bin"}, &asynctest.RunOpts{ID: r.Task.ID, Attempt: 2, MaxAttempts: 5})
	if r.Err != nil || r.Value.Resumed != 0 || r.Value.SHA256 != sum(now) {
		t.Fatalf("next attempt: %+v %v", r.Value, r.Err)
	}
	e.object("c.bin", now)
}

// Credentials the store refuses fail the task for good, saying so.
func TestS3BadCredentials(t *testing.T) {
	e := newEnv(t, nil, func(c *upload.Config) { c.S3.AccessKey = "not-the-key" })
	p, _ := e.file("x", 10, 8)
	r := e.run(upload.Args{Src: p, Dest: "s3://" + bucket + "/x"}, nil)
	var perm *worker.PermanentError
	if !errors.As(r.Err, &perm) || !strings.Contains(r.Err.Error(), "credentials refused") || !strings.Contains(r.Err.Error(), "InvalidAccessKeyId") {
		t.Fatalf("bad access key: %v, want a permanent error naming the refused credentials", r.Err)
	}
}

// A SlowDown with Retry-After is waited out and sent again within the
// attempt; one that lasts past ThrottleRetries ends the attempt with
// worker.RetryAfter of the hint.
func TestS3SlowDown(t *testing.T) {
	e := newEnv(t, nil, func(c *upload.Config) { c.ThrottleRetries = 2 })
	p, data := e.file("y", 1000, 9)
	var left atomic.Int64
	left.Store(2)
	e.s3.SetFault(func(r *http.Request) *s3fake.Fault {
		if r.Method == http.MethodPut && left.Add(-1) >= 0 {
			return &s3fake.Fault{Status: 503, Code: "SlowDown", RetryAfter: time.Second}
		}
		return nil
	})
	start := time.Now()
	r := e.run(upload.Args{Src: p, Dest: "s3://" + bucket + "/y"}, nil)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	// Two hints of a second each, waited in full.
	if el := time.Since(start); el < 2*time.Second {
		t.Fatalf("done after %v: the two Retry-After hints of 1s were not waited out", el)
	}
	e.object("y", data)
	if st := e.s3.Stats(); st.Faults != 2 || st.PutObjects != 1 {
		t.Fatalf("stats %+v", st)
	}
	left.Store(100)
	r = e.run(upload.Args{Src: p, Dest: "s3://" + bucket + "/y"}, nil)
	var ra *worker.RetryAfterError
	if !errors.As(r.Err, &ra) || ra.Delay != time.Second {
		t.Fatalf("lasting SlowDown: %v, want worker.RetryAfter(1s)", r.Err)
	}
	if st := e.s3.Stats(); st.Faults != 2+3 {
		t.Fatalf("%d SlowDowns served, want 2 and 3 (1 + ThrottleRetries)", st.Faults)
	}
}

// An attempt stopped after some parts leaves its upload and record; the
// next attempt lists the stored parts, keeps those whose ETag is the MD5 of
// the source's bytes, and sends the rest: what is sent again is at most
// PartConcurrency parts (those in flight when the first stopped).
func TestS3ResumeSendsOnlyMissingParts(t *testing.T) {
	e := newEnv(t, nil, nil)
	size := 5*ps + 777
	p, data := e.file("r.bin", size, 10)
	// The first attempt's parts from the third on are cut off after 1 MiB
	// (as by a worker that died while sending them), once parts 1 and 2
	// are stored.
	e.cutAfterTwoParts()
	a := upload.Args{Src: p, Dest: "s3://" + bucket + "/r.bin"}
	r := e.run(a, &asynctest.RunOpts{Attempt: 1, MaxAttempts: 3})
	if r.Err == nil {
		t.Fatal("the stopped attempt succeeded")
	}
	if rec, listed := e.record(r.Task.ID); !rec || !listed {
		t.Fatalf("no record after a stopped attempt: %v, listed %v", rec, listed)
	}
	if open := e.s3.OpenUploads(); len(open) != 1 {
		t.Fatalf("open uploads after a stopped attempt: %v", open)
	}
	first := e.s3.Stats()
	e.s3.SetFault(nil)
	e.s3.SetOnPart(nil)
	r2 := e.run(a, &asynctest.RunOpts{ID: r.Task.ID, Attempt: 2, MaxAttempts: 3})
	if r2.Err != nil {
		t.Fatal(r2.Err)
	}
	second := e.s3.Stats()
	if pg := r2.Progress; pg.Done != int64(size) || pg.Total != int64(size) {
		t.Errorf("last progress of the resumed attempt %d of %d, want %d of %d (kept parts count)", pg.Done, pg.Total, size, size)
	}
	if r2.Value.SHA256 != sum(data) || r2.Value.Parts != 6 || r2.Value.Resumed != 2*ps {
		t.Fatalf("resumed upload: %+v (stored before: %+v)", r2.Value, first)
	}
	// (Stored bytes: a part the first attempt was sending when it stopped
	// may be counted in BodyBytes after first was read.)
	if sent := second.PartBytes - first.PartBytes; sent != int64(size)-r2.Value.Resumed {
		t.Errorf("second attempt stored %d bytes, Resumed says %d of %d were kept", sent, r2.Value.Resumed, size)
	}
	if again := second.BodyBytes - int64(size); again > 2*ps {
		t.Errorf("%d bytes sent twice over both attempts, more than two parts (%d)", again, 2*ps)
	}
	if second.Begun != 1 {
		t.Errorf("%d multipart uploads begun, want 1", second.Begun)
	}
	e.object("r.bin", data)
	e.noOpenUploads()
	if rec, listed := e.record(r.Task.ID); rec || listed {
		t.Fatalf("record left after success: %v, listed %v", rec, listed)
	}
}

// The multipart upload of an attempt that is the task's last and fails is
// aborted (and its record removed); of an earlier one, kept for the retry.
func TestS3FinalFailureAborts(t *testing.T) {
	e := newEnv(t, nil, nil)
	p, _ := e.file("f.bin", 2*ps+1, 11)
	e.s3.SetFault(func(r *http.Request) *s3fake.Fault {
		if r.URL.Query().Get("partNumber") == "2" {
			return &s3fake.Fault{Status: 500, Code: "InternalError"}
		}
		return nil
	})
	a := upload.Args{Src: p, Dest: "s3://" + bucket + "/f.bin"}
	r := e.run(a, &asynctest.RunOpts{Attempt: 1, MaxAttempts: 2})
	if r.Err == nil {
		t.Fatal("succeeded through a failing part")
	}
	if open := e.s3.OpenUploads(); len(open) != 1 {
		t.Fatalf("after a failed attempt with one left: open uploads %v, want the one kept", open)
	}
	r = e.run(a, &asynctest.RunOpts{ID: r.Task.ID, Attempt: 2, MaxAttempts: 2})
	if r.Err == nil {
		t.Fatal("succeeded through a failing part")
	}
	e.noOpenUploads()
	if rec, listed := e.record(r.Task.ID); rec || listed {
		t.Fatalf("record left after the last attempt: %v, listed %v", rec, listed)
	}
	if st := e.s3.Stats(); st.Aborted != 1 {
		t.Fatalf("%d uploads aborted, want 1", st.Aborted)
	}
}

// Cancelling a task whose upload runs aborts its multipart upload.
func TestS3CancelMidUploadAborts(t *testing.T) {
	ended := make(chan error, 1)
	e := newEnv(t, func(e *env) func(w *worker.Worker) {
		return func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, a upload.Args) (upload.Result, error) {
				r, err := e.h.Run(ctx, a)
				ended <- err
				return r, err
			})
		}
	}, nil)
	p, _ := e.file("k.bin", 4*ps, 12)
	ctx := context.Background()
	var h *client.Handle
	var once sync.Once
	var hmu sync.Mutex
	e.s3.SetOnPart(func(pe s3fake.PartEvent) {
		once.Do(func() {
			hmu.Lock()
			defer hmu.Unlock()
			if _, err := h.Cancel(ctx); err != nil {
				t.Error(err)
			}
		})
	})
	// Parts after the first are held until their request is given up
	// (the handler's ctx ended), so the upload cannot finish first. (The
	// body is read first: the server notices a closed connection only
	// then.)
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
	hmu.Lock()
	h, err := e.f.Client().Enqueue(ctx, upload.Args{Src: p, Dest: "s3://" + bucket + "/k.bin"}, nil)
	hmu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the cancelled upload succeeded")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the handler did not end within 30s of its task's cancel")
	}
	e.f.WaitTask(h.ID(), client.StateCancelled)
	e.noOpenUploads()
	if rec, listed := e.record(h.ID()); rec || listed {
		t.Fatalf("record left after cancel: %v, listed %v", rec, listed)
	}
}

// Sweep aborts the uploads of tasks that ended without their handler
// knowing (cancelled while waiting for a retry, dead after a crash) or
// that are gone, and leaves those of live tasks.
func TestS3SweepAbortsEndedTasks(t *testing.T) {
	e := newEnv(t, nil, nil)
	ctx := context.Background()
	p, _ := e.file("w.bin", 2*ps+1, 13)
	// A pending task (no worker runs its kind here) whose first attempt
	// stopped after a part.
	h, err := e.f.Client().Enqueue(ctx, upload.Args{Src: p, Dest: "s3://" + bucket + "/w.bin"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	stopAfterPart := func(id string) {
		t.Helper()
		var cancel context.CancelCauseFunc
		var mu sync.Mutex
		key := strings.ReplaceAll(id, "/", "_")
		e.s3.SetOnPart(func(pe s3fake.PartEvent) {
			if pe.Key == key { // not a part of an earlier run still arriving
				mu.Lock()
				cancel(errors.New("stopped"))
				mu.Unlock()
			}
		})
		defer e.s3.SetOnPart(nil)
		r := asynctest.Run(e.f, func(ctx context.Context, a upload.Args) (upload.Result, error) {
			mu.Lock()
			ctx, cancel = context.WithCancelCause(ctx)
			mu.Unlock()
			return e.h.Run(ctx, a)
		}, upload.Args{Src: p, Dest: "s3://" + bucket + "/" + key}, &asynctest.RunOpts{ID: id, Attempt: 1, MaxAttempts: 3})
		if r.Err == nil {
			t.Fatal("the stopped attempt succeeded")
		}
		if rec, _ := e.record(id); !rec {
			t.Fatalf("%s: no record after a stopped attempt (%v)", id, r.Err)
		}
	}
	stopAfterPart(h.ID())
	gone := h.Queue() + "/no-such-task"
	stopAfterPart(gone)
	if open := e.s3.OpenUploads(); len(open) != 2 {
		t.Fatalf("open uploads %v, want 2", open)
	}
	n, err := e.h.Sweep(ctx, h.Queue())
	if err != nil || n != 1 {
		t.Fatalf("first sweep: %d aborted, %v; want the unknown task's", n, err)
	}
	if rec, _ := e.record(h.ID()); !rec {
		t.Fatal("the sweep removed a pending task's record")
	}
	if rec, listed := e.record(gone); rec || listed {
		t.Fatal("the sweep left an unknown task's record")
	}
	if _, err := h.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	n, err = e.h.Sweep(ctx, h.Queue())
	if err != nil || n != 1 {
		t.Fatalf("sweep after cancel: %d aborted, %v; want 1", n, err)
	}
	e.noOpenUploads()
	if rec, listed := e.record(h.ID()); rec || listed {
		t.Fatalf("record left after the sweep: %v, listed %v", rec, listed)
	}
}

// httpSource serves data at /ranged (http.ServeContent: Range, If-Range,
// a strong ETag) and at /chunked (no length, no ranges), counting the body
// bytes it sends.
type httpSource struct {
	srv  *httptest.Server
	sent atomic.Int64
	mu   sync.Mutex
	data []byte
}

func newHTTPSource(t *testing.T, data []byte) *httpSource {
	s := &httpSource{data: data}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		data := s.data
		s.mu.Unlock()
		cw := &countingWriter{ResponseWriter: w, n: &s.sent}
		switch r.URL.Path {
		case "/ranged":
			s := md5.Sum(data)
			w.Header().Set("ETag", `"`+hex.EncodeToString(s[:])+`"`)
			http.ServeContent(cw, r, "", time.Time{}, bytes.NewReader(data))
		case "/chunked":
			for off := 0; off < len(data); off += 64 << 10 {
				_, _ = cw.Write(data[off:min(off+64<<10, len(data))])
				w.(http.Flusher).Flush()
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// An http(s) source is streamed into the store: with a known length or
// chunked, small or in parts; a missing one fails for good.
func TestS3HTTPSource(t *testing.T) {
	e := newEnv(t, nil, nil)
	for _, size := range []int{1000, 2*ps + 5} {
		data := noise(size, uint64(size))
		src := newHTTPSource(t, data)
		for _, path := range []string{"/ranged", "/chunked"} {
			dest := fmt.Sprintf("s3://%s/h%d%s", bucket, size, path)
			r := e.run(upload.Args{Src: src.srv.URL + path, Dest: dest}, nil)
			if r.Err != nil {
				t.Fatalf("%d bytes from %s: %v", size, path, r.Err)
			}
			wantParts := 0
			if size > ps {
				wantParts = 3
			}
			if r.Value.Bytes != int64(size) || r.Value.SHA256 != sum(data) || r.Value.CRC32C != crc32cHex(data) || r.Value.Parts != wantParts {
				t.Fatalf("%d bytes from %s: %+v", size, path, r.Value)
			}
			e.object(strings.TrimPrefix(dest, "s3://"+bucket+"/"), data)
		}
	}
	src := newHTTPSource(t, nil)
	var perm *worker.PermanentError
	if r := e.run(upload.Args{Src: src.srv.URL + "/missing", Dest: "s3://" + bucket + "/m"}, nil); !errors.As(r.Err, &perm) {
		t.Fatalf("404 source: %v, want a permanent error", r.Err)
	}
	e.noOpenUploads()
}

// A resumed upload from an http source that serves ranges asks only for
// what follows the stored parts (If-Range with the ETag it saw) and goes
// on with the whole object's hashes from the record; one that serves no
// ranges is read again from the start, the stored parts kept.
func TestS3HTTPSourceResume(t *testing.T) {
	e := newEnv(t, nil, nil)
	size := 4*ps + 99
	data := noise(size, 21)
	src := newHTTPSource(t, data)
	for _, path := range []string{"/ranged", "/chunked"} {
		e.cutAfterTwoParts()
		a := upload.Args{Src: src.srv.URL + path, Dest: "s3://" + bucket + "/hr" + path}
		r := e.run(a, &asynctest.RunOpts{Attempt: 1, MaxAttempts: 3})
		if r.Err == nil {
			t.Fatal("the cut attempt succeeded")
		}
		e.s3.SetFault(nil)
		e.s3.SetOnPart(nil)
		before := src.sent.Load()
		r2 := e.run(a, &asynctest.RunOpts{ID: r.Task.ID, Attempt: 2, MaxAttempts: 3})
		if r2.Err != nil {
			t.Fatal(r2.Err)
		}
		if r2.Value.SHA256 != sum(data) || r2.Value.CRC32C != crc32cHex(data) || r2.Value.Resumed != 2*ps || r2.Value.Parts != 5 {
			t.Fatalf("%s: resumed upload %+v", path, r2.Value)
		}
		read := src.sent.Load() - before
		want := int64(size)
		if path == "/ranged" {
			want = int64(size - 2*ps)
		}
		if read != want {
			t.Errorf("%s: the resume read %d bytes of the source, want %d", path, read, want)
		}
		e.object("hr"+path, data)
	}
	e.noOpenUploads()
}

// Config.Bandwidth holds the bytes sent to a destination to its rate: n
// bytes take at least (n - Burst) / BytesPerSecond.
func TestS3Bandwidth(t *testing.T) {
	bw := ratelimit.Bandwidth{BytesPerSecond: 4 * mib, Burst: 256 << 10}
	e := newEnv(t, nil, func(c *upload.Config) { c.Bandwidth = bw })
	p, data := e.file("bw.bin", ps+mib, 22)
	start := time.Now()
	r := e.run(upload.Args{Src: p, Dest: "s3://" + bucket + "/bw.bin"}, nil)
	el := time.Since(start)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	least := time.Duration(float64(int64(len(data))-bw.Burst) / float64(bw.BytesPerSecond) * float64(time.Second))
	if el < least {
		t.Fatalf("%d bytes sent in %v, under a limit of %d B/s (burst %d) they take at least %v", len(data), el, bw.BytesPerSecond, bw.Burst, least)
	}
	e.object("bw.bin", data)
}

// Two attempts of one task that begin an upload at once (a reclaimed task
// whose first worker still runs) keep the first one recorded: the other
// aborts its own upload and fails its attempt.
func TestS3BeginRaceKeepsTheFirstUpload(t *testing.T) {
	e := newEnv(t, nil, nil)
	p, _ := e.file("race.bin", ps+1, 23)
	id := "default/race-" + strings.ReplaceAll(t.Name(), "/", "-")
	_, key, _ := strings.Cut(id, "/")
	// The rival records its upload while this attempt's begins.
	e.s3.SetFault(func(r *http.Request) *s3fake.Fault {
		if _, ok := r.URL.Query()["uploads"]; ok && r.Method == http.MethodPost {
			_, err := store.UploadBegin(context.Background(), e.f.Redis(), keys.ForQueue("default"), key,
				store.UploadRecord{ID: "rival", Bucket: bucket, Object: "race.bin", Dest: "s3://" + bucket + "/race.bin", PartSize: ps, Size: ps + 1})
			if err != nil {
				t.Error(err)
			}
		}
		return nil
	})
	r := e.run(upload.Args{Src: p, Dest: "s3://" + bucket + "/race.bin"}, &asynctest.RunOpts{ID: id, Attempt: 1, MaxAttempts: 3})
	if r.Err == nil || !strings.Contains(r.Err.Error(), "another attempt") {
		t.Fatalf("attempt that lost the race: %v", r.Err)
	}
	e.noOpenUploads() // its own upload aborted
	rec, found, err := store.UploadRead(context.Background(), e.f.Redis(), keys.ForQueue("default"), key)
	if err != nil || !found || rec.ID != "rival" {
		t.Fatalf("record after the race: %+v found=%v %v, want the rival's", rec, found, err)
	}
	if st := e.s3.Stats(); st.Begun != 1 || st.Aborted != 1 || st.Parts != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// An upload that is gone at the store when a later attempt resumes it
// (aborted, or expired by a lifecycle rule) is started over.
func TestS3ResumeOfAGoneUploadStartsOver(t *testing.T) {
	e := newEnv(t, nil, nil)
	p, data := e.file("g.bin", 4*ps, 24)
	e.cutAfterTwoParts()
	a := upload.Args{Src: p, Dest: "s3://" + bucket + "/g.bin"}
	r := e.run(a, &asynctest.RunOpts{Attempt: 1, MaxAttempts: 3})
	if r.Err == nil {
		t.Fatal("the cut attempt succeeded")
	}
	e.s3.SetFault(nil)
	e.s3.SetOnPart(nil)
	open := e.s3.OpenUploads()
	if len(open) != 1 {
		t.Fatalf("open uploads %v", open)
	}
	_, uid, _ := strings.Cut(open[0], " ")
	core, err := minio.NewCore(e.s3.Endpoint(), &minio.Options{Creds: credentials.NewStaticV4(e.s3.AccessKey(), e.s3.SecretKey(), ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := core.AbortMultipartUpload(context.Background(), bucket, "g.bin", uid); err != nil {
		t.Fatal(err)
	}
	r = e.run(a, &asynctest.RunOpts{ID: r.Task.ID, Attempt: 2, MaxAttempts: 3})
	if r.Err != nil || r.Value.Resumed != 0 || r.Value.SHA256 != sum(data) || r.Value.Parts != 4 {
		t.Fatalf("attempt after the upload was aborted: %+v %v", r.Value, r.Err)
	}
	if st := e.s3.Stats(); st.Begun != 2 {
		t.Fatalf("%d uploads begun, want 2", st.Begun)
	}
	e.object("g.bin", data)
	e.noOpenUploads()
}

// An attempt that finds the record's upload gone (NoSuchUpload) because
// an earlier one completed it at the store without its success being
// recorded (a lapsed lease) sends nothing: the object is the source's
// (its size, and the multipart ETag of the source's parts), so the
// attempt succeeds with every byte counted as resumed and the record goes.
func TestS3ResumeOfAnUploadCompletedBefore(t *testing.T) {
	e := newEnv(t, nil, nil)
	p, data := e.file("done.bin", 4*ps, 31)
	e.cutAfterTwoParts()
	a := upload.Args{Src: p, Dest: "s3://" + bucket + "/done.bin"}
	r := e.run(a, &asynctest.RunOpts{Attempt: 1, MaxAttempts: 3})
	if r.Err == nil {
		t.Fatal("the cut attempt succeeded")
	}
	e.s3.SetFault(nil)
	e.s3.SetOnPart(nil)
	open := e.s3.OpenUploads()
	if len(open) != 1 {
		t.Fatalf("open uploads %v", open)
	}
	_, uid, _ := strings.Cut(open[0], " ")
	// Out of band, the rest of the parts and the completion, as the
	// attempt that lost its lease did.
	ctx := context.Background()
	core, err := minio.NewCore(e.s3.Endpoint(), &minio.Options{Creds: credentials.NewStaticV4(e.s3.AccessKey(), e.s3.SecretKey(), ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	for n := 3; n <= 4; n++ {
		off := (n - 1) * ps
		if _, err := core.PutObjectPart(ctx, bucket, "done.bin", uid, n, bytes.NewReader(data[off:off+ps]), int64(ps), minio.PutObjectPartOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	lp, err := core.ListObjectParts(ctx, bucket, "done.bin", uid, 0, 1000)
	if err != nil || len(lp.ObjectParts) != 4 {
		t.Fatalf("parts %+v %v", lp.ObjectParts, err)
	}
	var cps []minio.CompletePart
	for _, op := range lp.ObjectParts {
		cps = append(cps, minio.CompletePart{PartNumber: op.PartNumber, ETag: op.ETag})
	}
	if _, err := core.CompleteMultipartUpload(ctx, bucket, "done.bin", uid, cps, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if rec, _ := e.record(r.Task.ID); !rec {
		t.Fatal("no record left by the cut attempt")
	}
	before := e.s3.Stats()
	r = e.run(a, &asynctest.RunOpts{ID: r.Task.ID, Attempt: 2, MaxAttempts: 3})
	if r.Err != nil || r.Value.Resumed != int64(len(data)) || r.Value.Bytes != int64(len(data)) || r.Value.SHA256 != sum(data) ||
		r.Value.CRC32C != crc32cHex(data) || r.Value.Parts != 4 || r.Value.Verified != "size,etag" {
		t.Fatalf("attempt after the upload was completed: %+v %v, want all %d bytes resumed, verified \"size,etag\"", r.Value, r.Err, len(data))
	}
	after := e.s3.Stats()
	if after.BodyBytes != before.BodyBytes || after.Parts != before.Parts || after.PutObjects != before.PutObjects ||
		after.Begun != before.Begun || after.Completed != before.Completed {
		t.Fatalf("something was sent: server stats %+v, before %+v", after, before)
	}
	if rec, listed := e.record(r.Task.ID); rec || listed {
		t.Fatalf("record left: %v, listed %v", rec, listed)
	}
	e.object("done.bin", data)
	e.noOpenUploads()
}

// RunSweeper sweeps until its ctx ends.
func TestS3RunSweeper(t *testing.T) {
	// The sweeper's ctx ends once it logged a pass that aborted an upload.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var swept atomic.Int64
	log := slog.New(&hookHandler{f: func(r slog.Record) {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "aborted" {
				swept.Add(a.Value.Int64())
				cancel()
			}
			return true
		})
	}})
	e := newEnv(t, nil, func(c *upload.Config) { c.Logger = log })
	p, _ := e.file("rs.bin", 3*ps, 25)
	e.cutAfterTwoParts()
	r := e.run(upload.Args{Src: p, Dest: "s3://" + bucket + "/rs.bin"}, &asynctest.RunOpts{ID: "default/gone", Attempt: 1, MaxAttempts: 3})
	if r.Err == nil {
		t.Fatal("the cut attempt succeeded")
	}
	e.s3.SetOnPart(nil)
	e.s3.SetFault(nil)
	done := make(chan error, 1)
	go func() { done <- e.h.RunSweeper(ctx, time.Hour, "default") }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || swept.Load() != 1 {
			t.Fatalf("RunSweeper returned %v having aborted %d", err, swept.Load())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("RunSweeper did not abort the gone task's upload within 30s")
	}
	e.noOpenUploads()
	if rec, listed := e.record("default/gone"); rec || listed {
		t.Fatalf("record left: %v, listed %v", rec, listed)
	}
}

// hookHandler is a slog.Handler that calls f with each record.
type hookHandler struct{ f func(slog.Record) }

func (h *hookHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *hookHandler) Handle(_ context.Context, r slog.Record) error {
	h.f(r)
	return nil
}
func (h *hookHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *hookHandler) WithGroup(string) slog.Handler      { return h }

// Without keys in S3Config, credentials come from the environment, else
// from the shared credentials file's profile (S3Config.Profile, else
// AWS_PROFILE).
func TestS3CredentialsFromEnvironmentAndProfile(t *testing.T) {
	e := newEnv(t, nil, nil)
	p, data := e.file("cred", 100, 26)
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ACCESS_KEY", "AWS_SECRET_KEY"} {
		t.Setenv(v, "")
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(home, "no-config"))
	creds := filepath.Join(home, "credentials")
	if err := os.WriteFile(creds, []byte(fmt.Sprintf("[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[fleet]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
		e.s3.AccessKey(), e.s3.SecretKey())), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
	try := func(what string, s3 func(c *upload.S3Config), wantOK bool) {
		t.Helper()
		cfg := e.cfg
		cfg.S3.AccessKey, cfg.S3.SecretKey = "", ""
		s3(&cfg.S3)
		h, err := upload.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		r := asynctest.Run(e.f, h.Run, upload.Args{Src: p, Dest: "s3://" + bucket + "/cred"}, nil)
		var perm *worker.PermanentError
		switch {
		case wantOK && r.Err != nil:
			t.Errorf("%s: %v", what, r.Err)
		case !wantOK && !errors.As(r.Err, &perm):
			t.Errorf("%s: %v, want the credentials refused for good", what, r.Err)
		}
	}
	try("the file's default profile", func(*upload.S3Config) {}, false)
	try("S3Config.Profile", func(c *upload.S3Config) { c.Profile = "fleet" }, true)
	t.Setenv("AWS_PROFILE", "fleet")
	try("AWS_PROFILE", func(*upload.S3Config) {}, true)
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_ACCESS_KEY_ID", e.s3.AccessKey())
	t.Setenv("AWS_SECRET_ACCESS_KEY", e.s3.SecretKey())
	try("the environment before the file", func(*upload.S3Config) {}, true)
	e.object("cred", data)
}

// A KMS key the store does not know fails the task for good, saying so:
// MinIO answers 404 kms:KeyNotFound (on gofakes3, which takes any key, a
// fault answers the same), for a single PUT and a multipart upload alike.
func TestS3UnknownKMSKeyIsPermanent(t *testing.T) {
	e := newEnv(t, nil, nil)
	kid := fmt.Sprintf("no-such-key-%d", time.Now().UnixNano())
	if e.s3.Upstream() == "" {
		e.s3.SetFault(func(r *http.Request) *s3fake.Fault {
			if r.Header.Get("X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id") == kid {
				return &s3fake.Fault{Status: http.StatusNotFound, Code: "kms:KeyNotFound"}
			}
			return nil
		})
	}
	small, _ := e.file("kms-small", 1000, 21)
	big, _ := e.file("kms-big", ps+1, 22)
	for _, src := range []string{small, big} {
		r := e.run(upload.Args{Src: src, Dest: "s3://" + bucket + "/kms-unknown", SSE: "aws:kms", SSEKMSKeyID: kid}, &asynctest.RunOpts{Attempt: 1, MaxAttempts: 5})
		var perm *worker.PermanentError
		if !errors.As(r.Err, &perm) || !strings.Contains(r.Err.Error(), "KMS key does not exist") || !strings.Contains(r.Err.Error(), "kms:KeyNotFound") {
			t.Fatalf("%s: %v, want a permanent error saying the KMS key does not exist", filepath.Base(src), r.Err)
		}
		e.noOpenUploads()
		if rec, listed := e.record(r.Task.ID); rec || listed {
			t.Fatalf("%s: record left: %v, listed %v", filepath.Base(src), rec, listed)
		}
	}
}

// XAmzContentChecksumMismatch (MinIO's answer to an x-amz-checksum-* that
// is not the body's) means, like BadDigest, that the store got other bytes
// than were hashed: the attempt fails as a source that changed (retried,
// the upload aborted and its record removed, so the next starts over).
func TestS3ChecksumMismatchIsASourceChange(t *testing.T) {
	e := newEnv(t, nil, nil)
	p, data := e.file("mismatch.bin", 2*ps, 23)
	var once atomic.Bool
	e.s3.SetFault(func(r *http.Request) *s3fake.Fault {
		if r.Method == http.MethodPut && r.URL.Query().Get("partNumber") == "2" && once.CompareAndSwap(false, true) {
			return &s3fake.Fault{Status: http.StatusBadRequest, Code: "XAmzContentChecksumMismatch"}
		}
		return nil
	})
	r := e.run(upload.Args{Src: p, Dest: "s3://" + bucket + "/mismatch.bin"}, &asynctest.RunOpts{Attempt: 1, MaxAttempts: 5})
	var perm *worker.PermanentError
	if r.Err == nil || errors.As(r.Err, &perm) || !strings.Contains(r.Err.Error(), "source changed") {
		t.Fatalf("part refused with XAmzContentChecksumMismatch: %v, want a retried error saying the source changed", r.Err)
	}
	e.noOpenUploads()
	if rec, listed := e.record(r.Task.ID); rec || listed {
		t.Fatalf("record left: %v, listed %v", rec, listed)
	}
	r = e.run(upload.Args{Src: p, Dest: "s3://" + bucket + "/mismatch.bin"}, &asynctest.RunOpts{ID: r.Task.ID, Attempt: 2, MaxAttempts: 5})
	if r.Err != nil || r.Value.Resumed != 0 || r.Value.SHA256 != sum(data) {
		t.Fatalf("next attempt: %+v %v", r.Value, r.Err)
	}
	e.object("mismatch.bin", data)
}

// With Checksums, the handler compares the whole-object SHA-256 the store
// gives with its own: a single PUT's echo, and a multipart object's
// composite (the SHA-256 of the parts' SHA-256s, "-" their count), which
// MinIO returns for an upload begun with x-amz-checksum-algorithm SHA256.
// Result.Verified names only the checks made: gofakes3 returns no
// multipart checksum, so there it has no sha256 entry.
func TestS3WholeObjectChecksum(t *testing.T) {
	e := newEnv(t, nil, func(c *upload.Config) { c.S3.Checksums = true })
	small, sdata := e.file("whole-s", 1000, 24)
	r := e.run(upload.Args{Src: small, Dest: "s3://" + bucket + "/whole-s"}, nil)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	// ("size,etag,sha256" when a HEAD followed every PUT.)
	if r.Value.Verified != "etag,sha256" {
		t.Fatalf("single PUT: verified %q, want \"etag,sha256\" (the store echoes the SHA-256 sent)", r.Value.Verified)
	}
	e.object("whole-s", sdata)

	big, bdata := e.file("whole-b", 2*ps+1, 25)
	r = e.run(upload.Args{Src: big, Dest: "s3://" + bucket + "/whole-b"}, nil)
	if r.Err != nil || r.Value.Parts != 3 || r.Value.SHA256 != sum(bdata) {
		t.Fatalf("multipart: %+v %v", r.Value, r.Err)
	}
	e.object("whole-b", bdata)
	if e.s3.Upstream() == "" {
		if r.Value.Verified != "size,etag" {
			t.Fatalf("multipart on gofakes3 (no whole-object checksum): verified %q, want \"size,etag\"", r.Value.Verified)
		}
		return
	}
	if r.Value.Verified != "size,etag,sha256-composite" {
		t.Fatalf("multipart: verified %q, want \"size,etag,sha256-composite\"", r.Value.Verified)
	}
	// The store keeps the composite of the three parts' SHA-256s.
	all := sha256.New()
	for off := 0; off < len(bdata); off += ps {
		p := sha256.Sum256(bdata[off:min(off+ps, len(bdata))])
		all.Write(p[:])
	}
	want := base64.StdEncoding.EncodeToString(all.Sum(nil)) + "-3"
	if info, err := e.s3.Info(bucket, "whole-b"); err != nil || info.Checksums["SHA256"] != want {
		t.Fatalf("stored checksums %v %v, want SHA256 %s", info.Checksums, err, want)
	}
}

// A resumed upload with Checksums completes with the SHA-256 of every part,
// those of the earlier attempt included (a ranged http source skips them:
// their SHA-256s come from the record), and the store's composite checks
// out (on MinIO; gofakes3 gives none).
func TestS3ResumeWithChecksums(t *testing.T) {
	e := newEnv(t, nil, func(c *upload.Config) { c.S3.Checksums = true })
	size := 3*ps + 5
	data := noise(size, 26)
	src := newHTTPSource(t, data)
	for _, path := range []string{"/ranged", "/chunked"} {
		e.cutAfterTwoParts()
		a := upload.Args{Src: src.srv.URL + path, Dest: "s3://" + bucket + "/rc" + path}
		r := e.run(a, &asynctest.RunOpts{Attempt: 1, MaxAttempts: 3})
		if r.Err == nil {
			t.Fatal("the cut attempt succeeded")
		}
		e.s3.SetFault(nil)
		e.s3.SetOnPart(nil)
		r2 := e.run(a, &asynctest.RunOpts{ID: r.Task.ID, Attempt: 2, MaxAttempts: 3})
		if r2.Err != nil {
			t.Fatal(r2.Err)
		}
		want := "size,etag"
		if e.s3.Upstream() != "" {
			want += ",sha256-composite"
		}
		if r2.Value.SHA256 != sum(data) || r2.Value.Resumed != 2*ps || r2.Value.Parts != 4 || r2.Value.Verified != want {
			t.Fatalf("%s: resumed upload %+v, want 2 parts kept of 4 and verified %q", path, r2.Value, want)
		}
		e.object("rc"+path, data)
	}
	e.noOpenUploads()
}
