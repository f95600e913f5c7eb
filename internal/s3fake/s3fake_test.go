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
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/taskfleet/async/internal/s3fake"
	"github.com/taskfleet/async/internal/testenv"
)

func start(t testing.TB, opts s3fake.Options) *s3fake.Server {
	t.Helper()
	if opts.Buckets == nil {
		opts.Buckets = []string{"fleet"}
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
	info, err := c.Client.PutObject(ctx, "fleet", "dir/a.bin", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{
		ContentType:          "application/x-test",
		UserMetadata:         map[string]string{"Origin": "fleet"},
		StorageClass:         "STANDARD_IA",
		ServerSideEncryption: nil,
		DisableMultipart:     true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if info.ETag != md5hex(data) {
		t.Fatalf("ETag %q, want MD5 %q", info.ETag, md5hex(data))
	}
	obj, err := c.Client.GetObject(ctx, "fleet", "dir/a.bin", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	_ = obj.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GET: %d bytes, err %v; want the %d bytes put", len(got), err, len(data))
	}
	st, err := c.Client.StatObject(ctx, "fleet", "dir/a.bin", minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.ContentType != "application/x-test" || st.UserMetadata["Origin"] != "fleet" {
		t.Fatalf("stat: content type %q, metadata %v", st.ContentType, st.UserMetadata)
	}
	stored, meta, err := s.Object("fleet", "dir/a.bin")
	if err != nil || !bytes.Equal(stored, data) || meta["Origin"] != "fleet" {
		t.Fatalf("Object: %d bytes, meta %v, err %v", len(stored), meta, err)
	}
	oi, err := s.Info("fleet", "dir/a.bin")
	if err != nil {
		t.Fatal(err)
	}
	if oi.Size != int64(len(data)) || oi.StorageClass != "STANDARD_IA" || oi.ContentType != "application/x-test" ||
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
	u, err := nr.PresignedGetObject(ctx, "fleet", "dir/a.bin", time.Minute, nil)
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
	if _, _, err := s.Object("fleet", "missing"); err == nil {
		t.Fatal("Object of a missing key: no error")
	}
	st2 := s.Stats()
	if st2.PutObjects != 1 || st2.ObjectBytes != int64(len(data)) || bodyBytes.Load() != int64(len(data)) {
		t.Fatalf("stats %+v, body bytes seen %d; want 1 put of %d", st2, bodyBytes.Load(), len(data))
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
	id, err := c.NewMultipartUpload(ctx, "fleet", "big.bin", minio.PutObjectOptions{
		ContentType: "application/x-big", UserMetadata: map[string]string{"Run": "7"}, StorageClass: "GLACIER_IR",
	})
	if err != nil {
		t.Fatal(err)
	}
	if open := s.OpenUploads(); len(open) != 1 || open[0] != "fleet/big.bin "+id {
		t.Fatalf("OpenUploads %v", open)
	}
	parts := [][]byte{payload(5<<20, 2), payload(5<<20, 3), payload(1<<20+3, 4)}
	var done []minio.CompletePart
	for i, p := range parts {
		op, err := c.PutObjectPart(ctx, "fleet", "big.bin", id, i+1, bytes.NewReader(p), int64(len(p)), minio.PutObjectPartOptions{})
		if err != nil {
			t.Fatalf("part %d: %v", i+1, err)
		}
		if op.ETag != md5hex(p) {
			t.Fatalf("part %d ETag %q, want MD5 %q", i+1, op.ETag, md5hex(p))
		}
		done = append(done, minio.CompletePart{PartNumber: i + 1, ETag: op.ETag})
	}
	// Part 2 again, as a resumed attempt would.
	if _, err := c.PutObjectPart(ctx, "fleet", "big.bin", id, 2, bytes.NewReader(parts[1]), int64(len(parts[1])), minio.PutObjectPartOptions{}); err != nil {
		t.Fatal(err)
	}
	lp, err := c.ListObjectParts(ctx, "fleet", "big.bin", id, 0, 1000)
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
	info, err := c.CompleteMultipartUpload(ctx, "fleet", "big.bin", id, done, minio.PutObjectOptions{})
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
	stored, meta, err := s.Object("fleet", "big.bin")
	if err != nil || !bytes.Equal(stored, cat) || meta["Run"] != "7" {
		t.Fatalf("Object: %d bytes (want %d), meta %v, err %v", len(stored), len(cat), meta, err)
	}
	oi, err := s.Info("fleet", "big.bin")
	if err != nil || oi.ETag != `"`+md5hex(cat)+`"` || oi.StorageClass != "GLACIER_IR" || oi.ContentType != "application/x-big" {
		t.Fatalf("Info %+v, err %v (HEAD shows the whole content's MD5)", oi, err)
	}
	pi := s.Parts(id)
	if len(pi) != 3 || pi[1].Stored != 2 || pi[1].Received != 2*5<<20 || pi[0].Stored != 1 || pi[2].Size != int64(len(parts[2])) {
		t.Fatalf("Parts %+v", pi)
	}
	if open := s.OpenUploads(); len(open) != 0 {
		t.Fatalf("OpenUploads after complete: %v", open)
	}

	id2, err := c.NewMultipartUpload(ctx, "fleet", "gone.bin", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutObjectPart(ctx, "fleet", "gone.bin", id2, 1, bytes.NewReader(parts[2]), int64(len(parts[2])), minio.PutObjectPartOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.AbortMultipartUpload(ctx, "fleet", "gone.bin", id2); err != nil {
		t.Fatal(err)
	}
	if open := s.OpenUploads(); len(open) != 0 {
		t.Fatalf("OpenUploads after abort: %v", open)
	}
	if _, err := c.ListObjectParts(ctx, "fleet", "gone.bin", id2, 0, 1000); minio.ToErrorResponse(err).Code != "NoSuchUpload" {
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
	id, err := c.NewMultipartUpload(ctx, "fleet", "d.bin", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wrongMD5 := base64.StdEncoding.EncodeToString(make([]byte, 16))
	_, err = c.PutObjectPart(ctx, "fleet", "d.bin", id, 1, bytes.NewReader(data), int64(len(data)), minio.PutObjectPartOptions{Md5Base64: wrongMD5})
	if code := minio.ToErrorResponse(err).Code; code != "BadDigest" {
		t.Fatalf("part with a wrong Content-MD5: %v (code %q), want BadDigest", err, code)
	}
	hdr := http.Header{}
	hdr.Set("X-Amz-Checksum-Crc32c", base64.StdEncoding.EncodeToString([]byte{1, 2, 3, 4}))
	_, err = c.PutObjectPart(ctx, "fleet", "d.bin", id, 1, bytes.NewReader(data), int64(len(data)), minio.PutObjectPartOptions{CustomHeader: hdr})
	if code := minio.ToErrorResponse(err).Code; code != "BadDigest" {
		t.Fatalf("part with a wrong x-amz-checksum-crc32c: %v (code %q), want BadDigest", err, code)
	}
	lp, err := c.ListObjectParts(ctx, "fleet", "d.bin", id, 0, 1000)
	if err != nil || len(lp.ObjectParts) != 0 {
		t.Fatalf("parts stored after bad digests: %+v, %v", lp.ObjectParts, err)
	}
	crc := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))
	want := base64.StdEncoding.EncodeToString([]byte{byte(crc >> 24), byte(crc >> 16), byte(crc >> 8), byte(crc)})
	hdr.Set("X-Amz-Checksum-Crc32c", want)
	if _, err := c.PutObjectPart(ctx, "fleet", "d.bin", id, 1, bytes.NewReader(data), int64(len(data)), minio.PutObjectPartOptions{CustomHeader: hdr}); err != nil {
		t.Fatal(err)
	}
	if pi := s.Parts(id); len(pi) != 1 || pi[0].Checksums["CRC32C"] != want || pi[0].Received != 3*int64(len(data)) {
		t.Fatalf("Parts %+v, want CRC32C %s", pi, want)
	}
	// A trailing checksum (STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER).
	if _, err := c.Client.PutObject(ctx, "fleet", "t.bin", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{
		Checksum: minio.ChecksumCRC32C, DisableMultipart: true,
	}); err != nil {
		t.Fatal(err)
	}
	oi, err := s.Info("fleet", "t.bin")
	if err != nil || oi.Checksums["CRC32C"] != want || oi.Size != int64(len(data)) {
		t.Fatalf("Info %+v, %v; want CRC32C %s", oi, err, want)
	}
	stored, _, _ := s.Object("fleet", "t.bin")
	if !bytes.Equal(stored, data) {
		t.Fatal("trailer-signed PUT stored other bytes")
	}
	if err := c.AbortMultipartUpload(ctx, "fleet", "d.bin", id); err != nil {
		t.Fatal(err)
	}
}

// TestBadKey: an unknown access key gets 403 InvalidAccessKeyId.
func TestBadKey(t *testing.T) {
	s := start(t, s3fake.Options{})
	c := client(t, s, "someone-else")
	_, err := c.Client.PutObject(context.Background(), "fleet", "x", bytes.NewReader([]byte("x")), 1, minio.PutObjectOptions{})
	er := minio.ToErrorResponse(err)
	if er.Code != "InvalidAccessKeyId" || er.StatusCode != http.StatusForbidden {
		t.Fatalf("bad key: %v (%+v)", err, er)
	}
	resp, err := http.Get(s.URL() + "/fleet/x")
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
	r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+s.AccessKey()+"/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0")
	r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
	return r
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
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	ctx := context.Background()
	resp, err := hc.Do(signed(t, s, ctx, http.MethodPut, "/fleet/f", []byte("abc")))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "2" || !strings.Contains(string(body), "<Code>SlowDown</Code>") {
		t.Fatalf("SlowDown: %d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if _, _, err := s.Object("fleet", "f"); err == nil {
		t.Fatal("object stored behind a fault")
	}

	s.SetFault(func(r *http.Request) *s3fake.Fault { return &s3fake.Fault{Cut: true, CutAfter: 2} })
	if resp, err := hc.Do(signed(t, s, ctx, http.MethodPut, "/fleet/f", []byte("abcdef"))); err == nil {
		_ = resp.Body.Close()
		t.Fatalf("cut: got a reply %d", resp.StatusCode)
	}

	s.SetFault(func(r *http.Request) *s3fake.Fault { return &s3fake.Fault{Delay: time.Hour} })
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		resp, err := hc.Do(signed(t, s, cctx, http.MethodGet, "/fleet/f", nil))
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
	resp, err = hc.Do(signed(t, s, ctx, http.MethodPut, "/fleet/f", []byte("abc")))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	s.SetFault(nil)
	if data, _, err := s.Object("fleet", "f"); resp.StatusCode != 200 || err != nil || string(data) != "abc" {
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
		if _, err := c.Client.PutObject(ctx, "fleet", fmt.Sprintf("o/%d", i), bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
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
	id, err := c.NewMultipartUpload(ctx, "fleet", "parts", minio.PutObjectOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for i := 0; b.Loop(); i++ {
		// One part number over and over: the fake keeps the last only.
		if _, err := c.PutObjectPart(ctx, "fleet", "parts", id, 1, bytes.NewReader(data), int64(len(data)), minio.PutObjectPartOptions{}); err != nil {
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
	id, err := c.NewMultipartUpload(ctx, "fleet", "cut.bin", minio.PutObjectOptions{})
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
	if _, err := c.PutObjectPart(ctx, "fleet", "cut.bin", id, 1, bytes.NewReader(data), int64(len(data)), minio.PutObjectPartOptions{}); err == nil {
		t.Fatal("a cut part: no error")
	}
	if pi := s.Parts(id); len(pi) != 1 || pi[0].Stored != 0 || pi[0].Received < 1<<20 {
		t.Fatalf("after the cut: %+v", pi)
	}
	cut := s.Parts(id)[0].Received
	s.SetFault(nil)
	if _, err := c.PutObjectPart(ctx, "fleet", "cut.bin", id, 1, bytes.NewReader(data), int64(len(data)), minio.PutObjectPartOptions{}); err != nil {
		t.Fatal(err)
	}
	if pi := s.Parts(id); pi[0].Stored != 1 || pi[0].Size != int64(len(data)) || pi[0].Received != cut+int64(len(data)) {
		t.Fatalf("after the resend: %+v (cut attempts received %d)", pi, cut)
	}
	if err := c.AbortMultipartUpload(ctx, "fleet", "cut.bin", id); err != nil {
		t.Fatal(err)
	}
}
