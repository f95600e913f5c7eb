package s3fake_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/encrypt"
	"github.com/minio/minio-go/v7/pkg/signer"

	"github.com/taskfleet/async/internal/s3fake"
	"github.com/taskfleet/async/internal/testenv"
)

// bkt is the tests' bucket: a name of their own, as on a real upstream the
// tests of other packages (running at the same time) share the server.
const bkt = "s3fake-tests"

func start(t testing.TB, opts s3fake.Options) *s3fake.Server {
	t.Helper()
	if opts.Buckets == nil {
		opts.Buckets = []string{bkt}
	}
	s, err := s3fake.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func client(t testing.TB, s *s3fake.Server, access string) minio.Core {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := minio.NewCore(s.Endpoint(), &minio.Options{
		Creds:        credentials.NewStaticV4(access, s.SecretKey(), ""),
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
		Transport:    tr,
		MaxRetries:   1,
		// Lets a test send a trailing checksum.
		TrailingHeaders: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return *c
}

// class is the storage class a test sends: aws on gofakes3 (it keeps any),
// REDUCED_REDUNDANCY on a real MinIO upstream (it refuses every class but
// that and STANDARD with InvalidStorageClass).
func class(s *s3fake.Server, aws string) string {
	if s.Upstream() != "" {
		return "REDUCED_REDUNDANCY"
	}
	return aws
}

// checksumMismatch is the code of a refused x-amz-checksum-*: BadDigest as
// on S3, XAmzContentChecksumMismatch from MinIO.
func checksumMismatch(s *s3fake.Server) string {
	if s.Upstream() != "" {
		return "XAmzContentChecksumMismatch"
	}
	return "BadDigest"
}

// unique returns name made unique to this run of the tests: keys whose
// absence a test checks, on an upstream that keeps objects between runs.
func unique(name string) string {
	return fmt.Sprintf("%s-%x", name, time.Now().UnixNano())
}

func payload(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func md5hex(b []byte) string {
	h := md5.Sum(b)
	return hex.EncodeToString(h[:])
}

// TestPutGet stores a few MB with minio-go's streaming signature (plain
// HTTP) and reads it back, with metadata, storage class and SSE as sent.
func TestPutGet(t *testing.T) {
	var bodyBytes atomic.Int64
	s := start(t, s3fake.Options{OnBody: func(_ *http.Request, n int, _ time.Time) { bodyBytes.Add(int64(n)) }})
	c := client(t, s, s.AccessKey())
	ctx := context.Background()
	data := payload(3<<20+17, 1)
	info, err := c.Client.PutObject(ctx, bkt, "dir/a.bin", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{
		ContentType:          "application/x-test",
		UserMetadata:         map[string]string{"Origin": "fleet"},
		StorageClass:         class(s, "STANDARD_IA"),
		ServerSideEncryption: nil,
		DisableMultipart:     true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if info.ETag != md5hex(data) {
		t.Fatalf("ETag %q, want MD5 %q", info.ETag, md5hex(data))
	}
	obj, err := c.Client.GetObject(ctx, bkt, "dir/a.bin", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	_ = obj.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GET: %d bytes, err %v; want the %d bytes put", len(got), err, len(data))
	}
	st, err := c.Client.StatObject(ctx, bkt, "dir/a.bin", minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.ContentType != "application/x-test" || st.UserMetadata["Origin"] != "fleet" {
		t.Fatalf("stat: content type %q, metadata %v", st.ContentType, st.UserMetadata)
	}
	stored, meta, err := s.Object(bkt, "dir/a.bin")
	if err != nil || !bytes.Equal(stored, data) || meta["Origin"] != "fleet" {
		t.Fatalf("Object: %d bytes, meta %v, err %v", len(stored), meta, err)
	}
	oi, err := s.Info(bkt, "dir/a.bin")
	if err != nil {
		t.Fatal(err)
	}
	if oi.Size != int64(len(data)) || oi.StorageClass != class(s, "STANDARD_IA") || oi.ContentType != "application/x-test" ||
		oi.ETag != `"`+md5hex(data)+`"` {
		t.Fatalf("Info %+v", oi)
	}
	for k := range oi.Headers {
		if strings.EqualFold(k, "X-Amz-Decoded-Content-Length") || strings.EqualFold(k, "Content-Encoding") {
			t.Fatalf("transport header %s kept with the object", k)
		}
	}
	// A presigned GET (X-Amz-Credential in the query), by a client that
	// asks the bucket's region first (no Region set).
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	nr, err := minio.New(s.Endpoint(), &minio.Options{Creds: credentials.NewStaticV4(s.AccessKey(), s.SecretKey(), ""), Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	u, err := nr.PresignedGetObject(ctx, bkt, "dir/a.bin", time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Get(u.String())
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || err != nil || !bytes.Equal(got, data) {
		t.Fatalf("presigned GET: %d, %d bytes, %v", resp.StatusCode, len(got), err)
	}
	if _, _, err := s.Object(bkt, unique("missing")); err == nil {
		t.Fatal("Object of a missing key: no error")
	}
	st2 := s.Stats()
	if st2.PutObjects != 1 || st2.ObjectBytes != int64(len(data)) || bodyBytes.Load() != int64(len(data)) {
		t.Fatalf("stats %+v, body bytes seen %d; want 1 put of %d", st2, bodyBytes.Load(), len(data))
	}
}

// TestSSE: SSE-S3 and SSE-KMS (with the key KMSKeyID names) are accepted
// and shown on HEAD. On gofakes3 nothing is encrypted; upstream, MinIO
// needs a KMS (the CI gives it a static key and ASYNC_S3_KMS_KEY_ID).
func TestSSE(t *testing.T) {
	s := start(t, s3fake.Options{})
	c := client(t, s, s.AccessKey())
	ctx := context.Background()
	if s.KMSKeyID() == "" {
		t.Fatalf("no KMS key id upstream: set %s to a key the server knows", s3fake.EnvKMSKeyID)
	}
	kms, err := encrypt.NewSSEKMS(s.KMSKeyID(), nil)
	if err != nil {
		t.Fatal(err)
	}
	data := payload(1000, 9)
	for _, tc := range []struct {
		key  string
		sse  encrypt.ServerSide
		want string
	}{{"sse-s3", encrypt.NewSSE(), "AES256"}, {"sse-kms", kms, "aws:kms"}} {
		info, err := c.Client.PutObject(ctx, bkt, tc.key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{ServerSideEncryption: tc.sse})
		if err != nil {
			t.Fatalf("%s: %v", tc.key, err)
		}
		// SSE-S3 keeps the MD5 ETag (on S3, and on MinIO).
		if tc.want == "AES256" && info.ETag != md5hex(data) {
			t.Fatalf("%s: ETag %q, want MD5 %q", tc.key, info.ETag, md5hex(data))
		}
		oi, err := s.Info(bkt, tc.key)
		if err != nil || oi.SSE != tc.want || oi.Size != int64(len(data)) {
			t.Fatalf("%s: Info %+v, %v; want SSE %s", tc.key, oi, err, tc.want)
		}
		got, _, err := s.Object(bkt, tc.key)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: Object %d bytes, %v", tc.key, len(got), err)
		}
	}
}

// TestMultipart begins, uploads (one part twice), lists, completes and
// aborts multipart uploads with minio-go's Core API.
func TestMultipart(t *testing.T) {
	var mu sync.Mutex
	var events []s3fake.PartEvent
	s := start(t, s3fake.Options{OnPart: func(p s3fake.PartEvent) {
		mu.Lock()
		events = append(events, p)
		mu.Unlock()
	}})
	c := client(t, s, s.AccessKey())
	ctx := context.Background()
	id, err := c.NewMultipartUpload(ctx, bkt, "big.bin", minio.PutObjectOptions{
		ContentType: "application/x-big", UserMetadata: map[string]string{"Run": "7"}, StorageClass: class(s, "GLACIER_IR"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if open := s.OpenUploads(); len(open) != 1 || open[0] != bkt+"/big.bin "+id {
		t.Fatalf("OpenUploads %v", open)
	}
	parts := [][]byte{payload(5<<20, 2), payload(5<<20, 3), payload(1<<20+3, 4)}
	var done []minio.CompletePart
	for i, p := range parts {
		op, err := c.PutObjectPart(ctx, bkt, "big.bin", id, i+1, bytes.NewReader(p), int64(len(p)), minio.PutObjectPartOptions{})
		if err != nil {
			t.Fatalf("part %d: %v", i+1, err)
		}
		if op.ETag != md5hex(p) {
			t.Fatalf("part %d ETag %q, want MD5 %q", i+1, op.ETag, md5hex(p))
		}
		done = append(done, minio.CompletePart{PartNumber: i + 1, ETag: op.ETag})
	}
	// Part 2 again, as a resumed attempt would.
	if _, err := c.PutObjectPart(ctx, bkt, "big.bin", id, 2, bytes.NewReader(parts[1]), int64(len(parts[1])), minio.PutObjectPartOptions{}); err != nil {
		t.Fatal(err)
	}
	lp, err := c.ListObjectParts(ctx, bkt, "big.bin", id, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(lp.ObjectParts) != 3 {
		t.Fatalf("ListParts: %d parts, want 3", len(lp.ObjectParts))
	}
	for i, p := range lp.ObjectParts {
		if p.PartNumber != i+1 || p.Size != int64(len(parts[i])) || strings.Trim(p.ETag, `"`) != md5hex(parts[i]) {
			t.Fatalf("ListParts part %d: %+v", i+1, p)
		}
	}
	mu.Lock()
	if len(events) != 4 || events[3].Number != 2 || events[3].Bytes != 5<<20 || events[0].UploadID != id || events[0].Key != "big.bin" {
		t.Fatalf("OnPart events %+v", events)
	}
	mu.Unlock()
	info, err := c.CompleteMultipartUpload(ctx, bkt, "big.bin", id, done, minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var cat []byte
	all := md5.New()
	for _, p := range parts {
		h := md5.Sum(p)
		all.Write(h[:])
		cat = append(cat, p...)
	}
	if want := hex.EncodeToString(all.Sum(nil)) + "-3"; info.ETag != want {
		t.Fatalf("complete ETag %q, want %q", info.ETag, want)
	}
	stored, meta, err := s.Object(bkt, "big.bin")
	if err != nil || !bytes.Equal(stored, cat) || meta["Run"] != "7" {
		t.Fatalf("Object: %d bytes (want %d), meta %v, err %v", len(stored), len(cat), meta, err)
	}
	oi, err := s.Info(bkt, "big.bin")
	// gofakes3's HEAD shows the whole content's MD5, a real server the
	// completion's ETag.
	wantETag := `"` + md5hex(cat) + `"`
	if s.Upstream() != "" {
		wantETag = `"` + info.ETag + `"`
	}
	if err != nil || oi.ETag != wantETag || oi.StorageClass != class(s, "GLACIER_IR") || oi.ContentType != "application/x-big" {
		t.Fatalf("Info %+v, err %v, want ETag %s", oi, err, wantETag)
	}
	pi := s.Parts(id)
	if len(pi) != 3 || pi[1].Stored != 2 || pi[1].Received != 2*5<<20 || pi[0].Stored != 1 || pi[2].Size != int64(len(parts[2])) {
		t.Fatalf("Parts %+v", pi)
	}
	if open := s.OpenUploads(); len(open) != 0 {
		t.Fatalf("OpenUploads after complete: %v", open)
	}

	id2, err := c.NewMultipartUpload(ctx, bkt, "gone.bin", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutObjectPart(ctx, bkt, "gone.bin", id2, 1, bytes.NewReader(parts[2]), int64(len(parts[2])), minio.PutObjectPartOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.AbortMultipartUpload(ctx, bkt, "gone.bin", id2); err != nil {
		t.Fatal(err)
	}
	if open := s.OpenUploads(); len(open) != 0 {
		t.Fatalf("OpenUploads after abort: %v", open)
	}
	if _, err := c.ListObjectParts(ctx, bkt, "gone.bin", id2, 0, 1000); minio.ToErrorResponse(err).Code != "NoSuchUpload" {
		t.Fatalf("ListParts of an aborted upload: %v", err)
	}
	st := s.Stats()
	if st.Begun != 2 || st.Completed != 1 || st.Aborted != 1 || st.Parts != 5 || st.PartBytes != int64(len(cat))+5<<20+int64(len(parts[2])) {
		t.Fatalf("stats %+v", st)
	}
}

// TestDigests: a wrong Content-MD5 or x-amz-checksum-* is refused with
// BadDigest and nothing is stored; a right trailing CRC32C is kept.
func TestDigests(t *testing.T) {
	s := start(t, s3fake.Options{})
	c := client(t, s, s.AccessKey())
	ctx := context.Background()
	data := payload(1<<20, 5)
	id, err := c.NewMultipartUpload(ctx, bkt, "d.bin", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wrongMD5 := base64.StdEncoding.EncodeToString(make([]byte, 16))
	_, err = c.PutObjectPart(ctx, bkt, "d.bin", id, 1, bytes.NewReader(data), int64(len(data)), minio.PutObjectPartOptions{Md5Base64: wrongMD5})
	if code := minio.ToErrorResponse(err).Code; code != "BadDigest" {
		t.Fatalf("part with a wrong Content-MD5: %v (code %q), want BadDigest", err, code)
	}
	hdr := http.Header{}
	hdr.Set("X-Amz-Checksum-Crc32c", base64.StdEncoding.EncodeToString([]byte{1, 2, 3, 4}))
	_, err = c.PutObjectPart(ctx, bkt, "d.bin", id, 1, bytes.NewReader(data), int64(len(data)), minio.PutObjectPartOptions{CustomHeader: hdr})
	if code := minio.ToErrorResponse(err).Code; code != checksumMismatch(s) {
		t.Fatalf("part with a wrong x-amz-checksum-crc32c: %v (code %q), want %s", err, code, checksumMismatch(s))
	}
	lp, err := c.ListObjectParts(ctx, bkt, "d.bin", id, 0, 1000)
	if err != nil || len(lp.ObjectParts) != 0 {
		t.Fatalf("parts stored after bad digests: %+v, %v", lp.ObjectParts, err)
	}
	crc := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))
	want := base64.StdEncoding.EncodeToString([]byte{byte(crc >> 24), byte(crc >> 16), byte(crc >> 8), byte(crc)})
	hdr.Set("X-Amz-Checksum-Crc32c", want)
	if _, err := c.PutObjectPart(ctx, bkt, "d.bin", id, 1, bytes.NewReader(data), int64(len(data)), minio.PutObjectPartOptions{CustomHeader: hdr}); err != nil {
		t.Fatal(err)
	}
	if pi := s.Parts(id); len(pi) != 1 || pi[0].Checksums["CRC32C"] != want || pi[0].Received != 3*int64(len(data)) {
		t.Fatalf("Parts %+v, want CRC32C %s", pi, want)
	}
	// A trailing checksum (STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER).
	if _, err := c.Client.PutObject(ctx, bkt, "t.bin", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{
		Checksum: minio.ChecksumCRC32C, DisableMultipart: true,
	}); err != nil {
		t.Fatal(err)
	}
	oi, err := s.Info(bkt, "t.bin")
	if err != nil || oi.Checksums["CRC32C"] != want || oi.Size != int64(len(data)) {
		t.Fatalf("Info %+v, %v; want CRC32C %s", oi, err, want)
	}
	stored, _, _ := s.Object(bkt, "t.bin")
	if !bytes.Equal(stored, data) {
		t.Fatal("trailer-signed PUT stored other bytes")
	}
	if err := c.AbortMultipartUpload(ctx, bkt, "d.bin", id); err != nil {
		t.Fatal(err)
	}
}

// TestBadKey: an unknown access key gets 403 InvalidAccessKeyId.
func TestBadKey(t *testing.T) {
	s := start(t, s3fake.Options{})
	c := client(t, s, "someone-else")
	_, err := c.Client.PutObject(context.Background(), bkt, "x", bytes.NewReader([]byte("x")), 1, minio.PutObjectOptions{})
	er := minio.ToErrorResponse(err)
	if er.Code != "InvalidAccessKeyId" || er.StatusCode != http.StatusForbidden {
		t.Fatalf("bad key: %v (%+v)", err, er)
	}
	resp, err := http.Get(s.URL() + "/" + bkt + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "<Code>AccessDenied</Code>") {
		t.Fatalf("anonymous: %d %s", resp.StatusCode, body)
	}
	if st := s.Stats(); st.BadKey != 2 || st.PutObjects != 0 {
		t.Fatalf("stats %+v", st)
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

func signed(t *testing.T, s *s3fake.Server, ctx context.Context, method, path string, body []byte) *http.Request {
	t.Helper()
	r, err := http.NewRequestWithContext(ctx, method, s.URL()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
	// Signed for real: a real server behind the layer (upstream mode)
	// checks the signature.
	return signer.SignV4(*r, s.AccessKey(), s.SecretKey(), "", "us-east-1")
}

// TestFaults: SlowDown with Retry-After, a cut connection, a delay that
// ends with the request's context, faults changed at run time.
func TestFaults(t *testing.T) {
	s := start(t, s3fake.Options{Fault: func(r *http.Request) *s3fake.Fault {
		if r.Method == http.MethodPut {
			return &s3fake.Fault{Status: http.StatusServiceUnavailable, Code: "SlowDown", RetryAfter: 1500 * time.Millisecond}
		}
		return nil
	}})
	// Its own key: the object must not be there before.
	key := unique("f")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	ctx := context.Background()
	resp, err := hc.Do(signed(t, s, ctx, http.MethodPut, "/"+bkt+"/"+key, []byte("abc")))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "2" || !strings.Contains(string(body), "<Code>SlowDown</Code>") {
		t.Fatalf("SlowDown: %d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if _, _, err := s.Object(bkt, key); err == nil {
		t.Fatal("object stored behind a fault")
	}

	s.SetFault(func(r *http.Request) *s3fake.Fault { return &s3fake.Fault{Cut: true, CutAfter: 2} })
	if resp, err := hc.Do(signed(t, s, ctx, http.MethodPut, "/"+bkt+"/"+key, []byte("abcdef"))); err == nil {
		_ = resp.Body.Close()
		t.Fatalf("cut: got a reply %d", resp.StatusCode)
	}

	s.SetFault(func(r *http.Request) *s3fake.Fault { return &s3fake.Fault{Delay: time.Hour} })
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		resp, err := hc.Do(signed(t, s, cctx, http.MethodGet, "/"+bkt+"/"+key, nil))
		if err == nil {
			_ = resp.Body.Close()
		}
		errc <- err
	}()
	testenv.Eventually(t, 10*time.Second, "the held request to arrive", func() bool { return s.Stats().Requests == 3 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("held request: %v, want context.Canceled", err)
	}
	testenv.Eventually(t, 10*time.Second, "the held request to end", func() bool { return s.Stats().Faults == 3 })

	s.SetFault(func(r *http.Request) *s3fake.Fault { return &s3fake.Fault{Delay: time.Millisecond} })
	resp, err = hc.Do(signed(t, s, ctx, http.MethodPut, "/"+bkt+"/"+key, []byte("abc")))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	s.SetFault(nil)
	if data, _, err := s.Object(bkt, key); resp.StatusCode != 200 || err != nil || string(data) != "abc" {
		t.Fatalf("after a pure delay: %d, %q, %v", resp.StatusCode, data, err)
	}
	if st := s.Stats(); st.Faults != 4 || st.PutObjects != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// BenchmarkPutObject is the fake's cost per small object, through minio-go
// over loopback (what a benchmark of a fleet against it pays on top).
func BenchmarkPutObject(b *testing.B) {
	s := start(b, s3fake.Options{})
	c := client(b, s, s.AccessKey())
	data := payload(16<<10, 6)
	ctx := context.Background()
	b.SetBytes(int64(len(data)))
	for i := 0; b.Loop(); i++ {
		if _, err := c.Client.PutObject(ctx, bkt, fmt.Sprintf("o/%d", i), bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPart is the fake's throughput for 8 MiB parts (streaming
// signature: minio-go hashes every chunk).
func BenchmarkPart(b *testing.B) {
	s := start(b, s3fake.Options{})
	c := client(b, s, s.AccessKey())
	data := payload(8<<20, 7)
	ctx := context.Background()
	id, err := c.NewMultipartUpload(ctx, bkt, "parts", minio.PutObjectOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for i := 0; b.Loop(); i++ {
		// One part number over and over: the fake keeps the last only.
		if _, err := c.PutObjectPart(ctx, bkt, "parts", id, 1, bytes.NewReader(data), int64(len(data)), minio.PutObjectPartOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCutPart: a part cut after 1 MiB is not stored, its bytes count as
// received, and the part sent again is stored once.
func TestCutPart(t *testing.T) {
	s := start(t, s3fake.Options{})
	c := client(t, s, s.AccessKey())
	ctx := context.Background()
	id, err := c.NewMultipartUpload(ctx, bkt, "cut.bin", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.SetFault(func(r *http.Request) *s3fake.Fault {
		if r.URL.Query().Get("partNumber") == "1" {
			return &s3fake.Fault{Cut: true, CutAfter: 1 << 20}
		}
		return nil
	})
	data := payload(5<<20, 8)
	if _, err := c.PutObjectPart(ctx, bkt, "cut.bin", id, 1, bytes.NewReader(data), int64(len(data)), minio.PutObjectPartOptions{}); err == nil {
		t.Fatal("a cut part: no error")
	}
	if pi := s.Parts(id); len(pi) != 1 || pi[0].Stored != 0 || pi[0].Received < 1<<20 {
		t.Fatalf("after the cut: %+v", pi)
	}
	cut := s.Parts(id)[0].Received
	s.SetFault(nil)
	if _, err := c.PutObjectPart(ctx, bkt, "cut.bin", id, 1, bytes.NewReader(data), int64(len(data)), minio.PutObjectPartOptions{}); err != nil {
		t.Fatal(err)
	}
	if pi := s.Parts(id); pi[0].Stored != 1 || pi[0].Size != int64(len(data)) || pi[0].Received != cut+int64(len(data)) {
		t.Fatalf("after the resend: %+v (cut attempts received %d)", pi, cut)
	}
	if err := c.AbortMultipartUpload(ctx, bkt, "cut.bin", id); err != nil {
		t.Fatal(err)
	}
}

// TestUpstreamForwardsUnchanged: in upstream mode a request reaches the
// upstream byte for byte (Host, escaped path, query, headers and
// aws-chunked body, all of which a SigV4 signature covers), while the
// layer counts the decoded payload of the part, calls OnPart with it,
// tracks the upload, and still serves faults itself. The upstream here is
// a recorder on loopback, so this runs without a real server.
func TestUpstreamForwardsUnchanged(t *testing.T) {
	type seen struct {
		method, host, uri string
		header            http.Header
		body              []byte
	}
	got := make(chan seen, 4)
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.Host, r.RequestURI, r.Header.Clone(), b}
		switch {
		case r.Method == http.MethodPost && r.URL.Query().Has("uploads"):
			_, _ = io.WriteString(w, `<InitiateMultipartUploadResult><UploadId>up-1</UploadId></InitiateMultipartUploadResult>`)
		case r.Method == http.MethodPut:
			w.Header().Set("ETag", `"e1"`)
			w.Header().Set("X-Amz-Checksum-Crc32c", "AAAAAA==")
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upDone := make(chan struct{})
	go func() { defer close(upDone); _ = up.Serve(ln) }()
	defer func() { _ = up.Close(); <-upDone }()
	t.Setenv(s3fake.EnvUpstream, "http://"+ln.Addr().String())
	t.Setenv(s3fake.EnvAccessKey, "up-access")
	t.Setenv(s3fake.EnvSecretKey, "up-secret")
	t.Setenv(s3fake.EnvKMSKeyID, "up-kms")

	var onBody atomic.Int64
	var parts []s3fake.PartEvent
	var mu sync.Mutex
	s := start(t, s3fake.Options{Buckets: []string{}, AccessKey: "ignored",
		OnBody: func(_ *http.Request, n int, _ time.Time) { onBody.Add(int64(n)) },
		OnPart: func(p s3fake.PartEvent) { mu.Lock(); parts = append(parts, p); mu.Unlock() }})
	if s.Upstream() != "http://"+ln.Addr().String() || s.AccessKey() != "up-access" || s.SecretKey() != "up-secret" || s.KMSKeyID() != "up-kms" {
		t.Fatalf("upstream %q, credentials %q/%q, KMS key %q: want the upstream's", s.Upstream(), s.AccessKey(), s.SecretKey(), s.KMSKeyID())
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	do := func(method, uri string, hdr map[string]string, body string) *http.Response {
		t.Helper()
		r, err := http.NewRequest(method, s.URL()+uri, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		resp, err := hc.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp
	}
	auth := "AWS4-HMAC-SHA256 Credential=up-access/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=abc"
	do(http.MethodPost, "/fleet/a%20b/c%2Bd?uploads=", map[string]string{"Authorization": auth}, "")
	u := <-got
	if u.host != s.Endpoint() || u.uri != "/fleet/a%20b/c%2Bd?uploads=" {
		t.Fatalf("upstream saw Host %q URI %q; want %q and the URI as sent", u.host, u.uri, s.Endpoint())
	}
	if open := s.OpenUploads(); len(open) != 1 || open[0] != "fleet/a b/c+d up-1" {
		t.Fatalf("OpenUploads %v", open)
	}
	// A part in aws-chunked framing with a trailer: 5 + 3 payload bytes.
	chunked := "5;chunk-signature=aa\r\nhello\r\n3;chunk-signature=bb\r\nabc\r\n0;chunk-signature=cc\r\nx-amz-checksum-crc32c:AAAAAA==\r\n\r\n"
	resp := do(http.MethodPut, "/fleet/a%20b/c%2Bd?partNumber=1&uploadId=up-1", map[string]string{
		"Authorization":                auth,
		"X-Amz-Content-Sha256":         "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
		"X-Amz-Decoded-Content-Length": "8",
		"Content-Encoding":             "aws-chunked",
		"X-Amz-Trailer":                "x-amz-checksum-crc32c",
		"X-Amz-Date":                   "20260101T000000Z",
	}, chunked)
	p := <-got
	if p.host != s.Endpoint() || p.uri != "/fleet/a%20b/c%2Bd?partNumber=1&uploadId=up-1" || string(p.body) != chunked {
		t.Fatalf("upstream saw Host %q URI %q body %q; want them as sent", p.host, p.uri, p.body)
	}
	for _, h := range []string{"Authorization", "X-Amz-Content-Sha256", "X-Amz-Decoded-Content-Length", "Content-Encoding", "X-Amz-Trailer", "X-Amz-Date"} {
		if p.header.Get(h) == "" {
			t.Fatalf("header %s not forwarded: %v", h, p.header)
		}
	}
	if resp.StatusCode != 200 || resp.Header.Get("ETag") != `"e1"` {
		t.Fatalf("part reply %d ETag %q", resp.StatusCode, resp.Header.Get("ETag"))
	}
	pi := s.Parts("up-1")
	if len(pi) != 1 || pi[0].Received != 8 || pi[0].Size != 8 || pi[0].Stored != 1 || pi[0].ETag != `"e1"` || pi[0].Checksums["CRC32C"] != "AAAAAA==" {
		t.Fatalf("Parts %+v; want 8 payload bytes stored once with the upstream's ETag and checksum", pi)
	}
	mu.Lock()
	if len(parts) != 1 || parts[0].Bytes != 8 || parts[0].Key != "a b/c+d" {
		t.Fatalf("OnPart %+v", parts)
	}
	mu.Unlock()
	if st := s.Stats(); onBody.Load() != 8 || st.BodyBytes != 8 || st.PartBytes != 8 || st.Begun != 1 {
		t.Fatalf("OnBody saw %d bytes, stats %+v; want 8 payload bytes", onBody.Load(), st)
	}
	// A fault is served by the layer: nothing reaches the upstream.
	s.SetFault(func(*http.Request) *s3fake.Fault { return &s3fake.Fault{Status: 503, Code: "SlowDown"} })
	if resp := do(http.MethodGet, "/"+bkt+"/x", map[string]string{"Authorization": auth}, ""); resp.StatusCode != 503 {
		t.Fatalf("fault: %d", resp.StatusCode)
	}
	s.SetFault(nil)
	do(http.MethodDelete, "/fleet/a%20b/c%2Bd?uploadId=up-1", map[string]string{"Authorization": auth}, "")
	if d := <-got; d.method != http.MethodDelete {
		t.Fatalf("upstream saw %s after the fault, want the DELETE", d.method)
	}
	// The recorder answers 200 to DELETE, not 204: not an abort.
	if st := s.Stats(); st.Faults != 1 || st.Aborted != 0 || st.Requests != 4 {
		t.Fatalf("stats %+v", st)
	}
}

// TestUnsignedTrailer: an aws-chunked body with an unsigned trailer (what
// SDKs send over TLS) is decoded and its trailing checksum checked.
//
// It checks the in-memory mode's own decoder, so it runs in that mode even
// when ASYNC_S3_UPSTREAM points at a real server (whose decoding is its own
// and is exercised by every upload test there).
func TestUnsignedTrailer(t *testing.T) {
	t.Setenv(s3fake.EnvUpstream, "")
	s := start(t, s3fake.Options{})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	crc := crc32.Checksum([]byte("hello world"), crc32.MakeTable(crc32.Castagnoli))
	sum := base64.StdEncoding.EncodeToString([]byte{byte(crc >> 24), byte(crc >> 16), byte(crc >> 8), byte(crc)})
	for _, tc := range []struct {
		sum    string
		status int
	}{{"AAAAAA==", 400}, {sum, 200}} {
		body := "5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32c:" + tc.sum + "\r\n\r\n"
		r := signed(t, s, context.Background(), http.MethodPut, "/"+bkt+"/u.txt", []byte(body))
		r.Header.Set("X-Amz-Content-Sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
		r.Header.Set("X-Amz-Decoded-Content-Length", "11")
		r.Header.Set("X-Amz-Trailer", "x-amz-checksum-crc32c")
		r.Header.Set("Content-Encoding", "aws-chunked")
		resp, err := hc.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Fatalf("checksum %s: %d %s, want %d", tc.sum, resp.StatusCode, msg, tc.status)
		}
	}
	data, _, err := s.Object(bkt, "u.txt")
	if err != nil || string(data) != "hello world" {
		t.Fatalf("stored %q, %v", data, err)
	}
	if oi, _ := s.Info(bkt, "u.txt"); oi.Checksums["CRC32C"] != sum || oi.Headers["Content-Encoding"] != "" {
		t.Fatalf("Info %+v", oi)
	}
}
