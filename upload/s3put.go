package upload

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/encrypt"
	"golang.org/x/sync/errgroup"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
	"github.com/taskfleet/async/worker"
)

const (
	minPartSize = 5 << 20
	maxPartSize = 5 << 30
	maxParts    = 10000
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// job is one upload to S3 in progress.
type job struct {
	h    *Handler
	a    Args
	d    s3Dest
	sc   *s3Conn
	rk   string // the destination's key of the request and bandwidth limits
	opts minio.PutObjectOptions
	sse  encrypt.ServerSide

	// The resume record: rec is kept only when the handler has a task (in
	// its ctx) and Redis.
	task   worker.Task
	record bool
	q      keys.Queue

	uploadID string // the multipart upload, once begun
	done     atomic.Int64
	total    int64
}

// toS3 uploads the source named by a.Src to d.
func (h *Handler) toS3(ctx context.Context, a Args, d s3Dest) (res Result, err error) {
	sc, err := h.conns.get(h.s3)
	if err != nil {
		return Result{}, err
	}
	j := &job{h: h, a: a, d: d, sc: sc}
	j.rk = rateKey("s3", sc.endpoint+"/"+d.bucket)
	if err := j.objectOptions(); err != nil {
		return Result{}, err
	}
	if t, ok := worker.TaskFromContext(ctx); ok && h.rdb != nil {
		j.task, j.record, j.q = t, true, keys.ForQueue(t.Queue)
	}
	defer func() {
		if err != nil && j.uploadID != "" && j.ends(ctx, err) {
			j.abort(context.WithoutCancel(ctx), j.d, j.uploadID)
		}
	}()
	var rec store.UploadRecord
	found := false
	var kept map[int]string
	var src *source
	if !isHTTP(a.Src) {
		p, err := h.inRoots(a.Src)
		if err != nil {
			return Result{}, err
		}
		if src, err = openFile(p); err != nil {
			return Result{}, err
		}
		defer src.Close()
		if src.size <= h.threshold {
			// One PUT: no record to read. (One left by an attempt that saw
			// the file larger is aborted by the sweeper once the task
			// ended.)
			j.total = src.size
			worker.ReportProgress(ctx, 0, src.size)
			return j.single(ctx, src)
		}
	}
	if j.record {
		rec, found, err = store.UploadRead(ctx, h.rdb, j.q, t(j))
		if err != nil && !found {
			return Result{}, err
		}
		if err != nil || (found && (rec.Dest != a.Dest || rec.Bucket != d.bucket || rec.Object != d.key)) {
			// Unreadable, or of other arguments: start over.
			j.abortRec(ctx, rec)
			found = false
		}
	}
	from := int64(0)
	if found {
		listed, err := j.listParts(ctx, rec.ID)
		if err != nil && !noSuchUpload(err) {
			return Result{}, j.sc.s3Err("list parts", j.d, err)
		}
		if err != nil {
			// Gone: completed by an attempt whose success was not recorded
			// (its lease lapsed), or aborted, or expired by a lifecycle
			// rule. Done if the object is the source's; else start over.
			if res, ok, err := j.completedBefore(ctx, src, rec); err != nil || ok {
				return res, err
			}
			j.abortRec(ctx, rec)
			found = false
		}
		kept = map[int]string{}
		// Every stored part is a candidate: it is kept if its ETag is the
		// MD5 of the source's bytes for it (checked as they are read), so
		// a part stored by an attempt that died before recording it counts.
		for n, lp := range listed {
			kept[n] = strings.Trim(lp.ETag, `"`)
		}
		// An http source may skip the stored parts at its start, if the
		// record has the hashes' state after them.
		// Only parts of the full size count, and the last byte is asked
		// for (a range past the end is refused).
		for k := 1; rec.Size > 0 && kept[k] != "" && kept[k] == rec.Parts[k].MD5 && rec.Parts[k].State != "" && rec.Parts[k].Size == rec.PartSize && int64(k)*rec.PartSize < rec.Size; k++ {
			from = int64(k) * rec.PartSize
		}
	}
	if src == nil {
		if src, err = h.openHTTP(ctx, a.Src, from, rec.Fingerprint); err != nil {
			return Result{}, err
		}
		defer src.Close()
	}
	ps, err := h.partSizeFor(src.size)
	if err != nil {
		return Result{}, err
	}
	j.total = src.size
	worker.ReportProgress(ctx, 0, max(src.size, 0))
	if found && (rec.Fingerprint != src.fp || rec.PartSize != ps || rec.Size != src.size) {
		// The source is not the one the record's parts came from (or the
		// part size changed): its parts are of no use.
		j.abortRec(ctx, rec)
		found = false
	}
	if !found && src.off > 0 {
		// Cannot happen (a range is asked only of the record's source, and
		// If-Range sends the whole of another); fail the attempt.
		return Result{}, fmt.Errorf("source %s: a ranged reply for an upload that starts over", src.name)
	}
	if !found && src.size >= 0 && src.size <= h.threshold {
		return j.single(ctx, src)
	}
	var head []byte
	if !found && src.size < 0 {
		// Unknown size: up to the threshold, one PUT of what was read.
		head = make([]byte, h.threshold+1)
		n, err := io.ReadFull(src.body, head)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return Result{}, fmt.Errorf("source GET %s: %w", src.name, err)
		}
		head = head[:n]
		if int64(n) <= h.threshold {
			defer src.body.Close() // src.Close closes the replacement
			src.body = io.NopCloser(bytes.NewReader(head))
			src.size = int64(n)
			j.total = src.size
			return j.single(ctx, src)
		}
	}
	if !found {
		kept = nil
	}
	return j.multipart(ctx, src, ps, rec, found, kept, head)
}

// t is the record's task key.
func t(j *job) string {
	_, key, _ := strings.Cut(j.task.ID, "/")
	return key
}

// abort aborts multipart upload id (gone already is fine) and removes its
// record. Failures are left to the sweeper and the bucket's lifecycle rule.
func (j *job) abort(ctx context.Context, d s3Dest, id string) {
	if id == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := j.h.call(ctx, rateKey("s3", j.sc.endpoint+"/"+d.bucket), func(ctx context.Context) error {
		return j.sc.core.AbortMultipartUpload(ctx, d.bucket, d.key, id)
	})
	if err != nil && !noSuchUpload(err) {
		j.h.log.Warn("upload: abort multipart upload", "dest", j.a.Dest, "upload_id", id, "err", err)
		return // the record stays: the sweeper tries again
	}
	if j.record {
		if _, err := store.UploadEnd(ctx, j.h.rdb, j.q, t(j), id); err != nil {
			j.h.log.Warn("upload: remove upload record", "dest", j.a.Dest, "upload_id", id, "err", err)
		}
	}
}

// abortRec aborts the upload of an earlier attempt's record (of its own
// bucket and object) and removes the record.
func (j *job) abortRec(ctx context.Context, rec store.UploadRecord) {
	if rec.ID != "" && (rec.Bucket == "" || rec.Object == "") {
		// A record too broken to name its upload: only removed (the
		// bucket's lifecycle rule gets the upload).
		if _, err := store.UploadEnd(ctx, j.h.rdb, j.q, t(j), rec.ID); err != nil {
			j.h.log.Warn("upload: remove upload record", "dest", j.a.Dest, "upload_id", rec.ID, "err", err)
		}
		return
	}
	j.abort(ctx, s3Dest{bucket: rec.Bucket, key: rec.Object}, rec.ID)
}

// objectOptions derives the object's options from the args and the
// configuration's defaults.
func (j *job) objectOptions() error {
	a, c := j.a, j.h.s3
	ct := a.ContentType
	if ct == "" {
		ct = mime.TypeByExtension(path.Ext(j.d.key))
	}
	if ct == "" {
		ct = "application/octet-stream"
	}
	sc := a.StorageClass
	if sc == "" {
		sc = c.StorageClass
	}
	kind, kid := a.SSE, a.SSEKMSKeyID
	if kind == "" && kid == "" {
		kind, kid = c.SSE, c.SSEKMSKeyID
	}
	sse, err := sseOf(kind, kid)
	if err != nil {
		return err
	}
	for k := range a.Metadata {
		if k == "" || strings.ContainsAny(k, " \t\r\n:") {
			return worker.Permanent(fmt.Errorf("metadata key %q is not a header name", k))
		}
	}
	j.sse = sse
	j.opts = minio.PutObjectOptions{
		ContentType:          ct,
		UserMetadata:         a.Metadata,
		StorageClass:         sc,
		ServerSideEncryption: sse,
		// The payload's SHA-256 is computed by the handler and signed.
		DisableContentSha256: true,
	}
	return nil
}

// etagIsMD5 reports whether the store's ETags are MD5s of the bytes (not
// with SSE-KMS or SSE-C).
func (j *job) etagIsMD5() bool {
	return j.sse == nil || j.sse.Type() == encrypt.S3
}

// sums are the hashes of one stretch of bytes.
type sums struct {
	md5, sha hash.Hash
	n        int64
}

func newSums() *sums { return &sums{md5: md5.New(), sha: sha256.New()} }

func (s *sums) Write(p []byte) (int, error) {
	s.md5.Write(p)
	s.sha.Write(p)
	s.n += int64(len(p))
	return len(p), nil
}

// whole are the hashes of the whole object.
type whole struct {
	sha hash.Hash
	crc hash.Hash32
}

func newWhole() *whole { return &whole{sha: sha256.New(), crc: crc32.New(castagnoli)} }

func (w *whole) Write(p []byte) (int, error) {
	w.sha.Write(p)
	w.crc.Write(p)
	return len(p), nil
}

// state is w's state, for a record (base64, no commas).
func (w *whole) state() string {
	a, err1 := w.sha.(encoding.BinaryMarshaler).MarshalBinary()
	b, err2 := w.crc.(encoding.BinaryMarshaler).MarshalBinary()
	if err1 != nil || err2 != nil {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(a) + "." + base64.RawURLEncoding.EncodeToString(b)
}

func (w *whole) restore(s string) bool {
	as, bs, ok := strings.Cut(s, ".")
	if !ok {
		return false
	}
	a, err1 := base64.RawURLEncoding.DecodeString(as)
	b, err2 := base64.RawURLEncoding.DecodeString(bs)
	if err1 != nil || err2 != nil {
		return false
	}
	return w.sha.(encoding.BinaryUnmarshaler).UnmarshalBinary(a) == nil && w.crc.(encoding.BinaryUnmarshaler).UnmarshalBinary(b) == nil
}

// body is what a request sends: r throttled on the destination's bandwidth,
// counted in the task's progress.
func (j *job) body(ctx context.Context, r io.Reader) io.Reader {
	if j.h.bw != nil {
		r = j.h.bw.Reader(ctx, j.rk, r)
	}
	return r
}

// progress adds n bytes done.
func (j *job) progress(ctx context.Context, n int64) {
	d := j.done.Add(n)
	worker.ReportProgress(ctx, d, max(j.total, d))
}

// single sends src in one PUT.
func (j *job) single(ctx context.Context, src *source) (Result, error) {
	if src.file != nil && src.size <= maxSmallBuf {
		return j.singleBuffered(ctx, src)
	}
	var open func() io.Reader
	ps, w := newSums(), newWhole()
	if src.file != nil {
		if _, err := io.Copy(io.MultiWriter(ps, w), io.NewSectionReader(src.file, 0, src.size)); err != nil {
			return Result{}, fmt.Errorf("read %s: %w", src.name, err)
		}
		if ps.n != src.size {
			return Result{}, fmt.Errorf("source %s: %w (read %d bytes of %d)", src.name, errSourceChanged, ps.n, src.size)
		}
		open = func() io.Reader { return io.NewSectionReader(src.file, 0, src.size) }
	} else {
		var buf bytes.Buffer
		if _, err := io.Copy(io.MultiWriter(&buf, ps, w), src.body); err != nil {
			return Result{}, fmt.Errorf("source GET %s: %w", src.name, err)
		}
		if ps.n != src.size {
			return Result{}, fmt.Errorf("source GET %s: read %d bytes of %d", src.name, ps.n, src.size)
		}
		b := buf.Bytes()
		open = func() io.Reader { return bytes.NewReader(b) }
	}
	return j.put(ctx, src, open, ps.md5.Sum(nil), ps.sha.Sum(nil), w.crc)
}

// singleBuffered sends a file of up to maxSmallBuf bytes in one PUT: it is
// read once into a pooled buffer, hashed in one pass (MD5, SHA-256,
// CRC32C), and sent from the buffer, so what is sent is what was hashed.
// A change of the file meanwhile shows in its fingerprint afterwards
// (source.check).
func (j *job) singleBuffered(ctx context.Context, src *source) (Result, error) {
	bp := bufs.get(int(src.size))
	b := *bp
	n, err := src.file.ReadAt(b, 0)
	if n < len(b) {
		if err == nil || errors.Is(err, io.EOF) {
			return Result{}, fmt.Errorf("source %s: %w (read %d bytes of %d)", src.name, errSourceChanged, n, src.size)
		}
		return Result{}, fmt.Errorf("read %s: %w", src.name, err)
	}
	m, sh, crc := md5.New(), sha256.New(), crc32.New(castagnoli)
	m.Write(b)
	sh.Write(b)
	crc.Write(b)
	res, err := j.put(ctx, src, func() io.Reader { return bytes.NewReader(b) }, m.Sum(nil), sh.Sum(nil), crc)
	if err == nil {
		bufs.put(bp)
	}
	return res, err
}

// put sends the body open gives (src.size bytes, of MD5 md5sum, SHA-256
// shasum and CRC32C crc) in one PUT and verifies it.
func (j *job) put(ctx context.Context, src *source, open func() io.Reader, md5sum, shasum []byte, crc hash.Hash32) (Result, error) {
	opts := j.opts
	if j.h.s3.Checksums {
		opts.UserMetadata = withHeader(opts.UserMetadata, "X-Amz-Checksum-Sha256", base64.StdEncoding.EncodeToString(shasum))
	}
	var info minio.UploadInfo
	err := j.h.call(ctx, j.rk, func(ctx context.Context) error {
		var err error
		info, err = j.sc.core.PutObject(ctx, j.d.bucket, j.d.key, j.body(ctx, open()), src.size,
			base64.StdEncoding.EncodeToString(md5sum), hex.EncodeToString(shasum), opts)
		return err
	})
	if err != nil {
		return Result{}, j.sc.s3Err("PUT", j.d, err)
	}
	if err := src.check(); err != nil {
		return Result{}, err // the object holds the bytes that were hashed; a retry replaces it
	}
	j.progress(ctx, src.size)
	res := Result{Bytes: src.size, SHA256: hex.EncodeToString(shasum), CRC32C: crcHex(crc), Dest: j.a.Dest,
		ETag: strings.Trim(info.ETag, `"`), VersionID: info.VersionID}
	want := ""
	if j.etagIsMD5() {
		want = hex.EncodeToString(md5sum)
	}
	return j.verify(ctx, res, wantSums{etag: want, sha: base64.StdEncoding.EncodeToString(shasum), reply: info.ChecksumSHA256})
}

// withHeader is m with k: v added (a copy: m is the caller's).
func withHeader(m map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for a, b := range m {
		out[a] = b
	}
	out[k] = v
	return out
}

func crcHex(c hash.Hash32) string { return fmt.Sprintf("%08x", c.Sum32()) }

// wantSums is what verify compares the store's view of an object with.
type wantSums struct {
	etag      string // the ETag the store must show; "" to skip (SSE-KMS)
	sha       string // the whole object's SHA-256, base64
	composite string // a multipart object's composite SHA-256 ("<base64>-<parts>"); "" for a single PUT
	reply     string // the SHA-256 checksum the upload's own reply gave, if any
}

// verify checks the upload's reply and, after a multipart upload (or a
// single PUT without an MD5 ETag, or with S3Config.HeadAfterPut), reads the
// object's size, ETag and checksums back (HEAD) to compare them with what
// was sent. Result.Verified names the checks made, and only those: "etag"
// (the reply's, or the HEAD's), "size" (HEAD), "sha256"
// (the store gave the whole object's SHA-256: a single PUT's echo, or a
// full-object checksum) and "sha256-composite" (the store gave a multipart
// object's composite of the parts' SHA-256s). A store that returns no
// checksum (one that does not know the headers, or an upload without
// S3Config.Checksums) gets neither sha256 entry.
func (j *job) verify(ctx context.Context, res Result, want wantSums) (Result, error) {
	if want.etag != "" && res.ETag != want.etag {
		return Result{}, fmt.Errorf("upload to %s: the store's ETag %q is not the %q of what was sent", j.a.Dest, res.ETag, want.etag)
	}
	var checked []string
	note := func(c string) {
		for _, x := range checked {
			if x == c {
				return
			}
		}
		checked = append(checked, c)
	}
	checkSum := func(where, got string) error {
		if got == "" {
			return nil
		}
		c, err := j.sumCheck(got, want)
		if err != nil {
			return fmt.Errorf("upload to %s: %s: %w", j.a.Dest, where, err)
		}
		note(c)
		return nil
	}
	if err := checkSum("the upload's reply", want.reply); err != nil {
		return Result{}, err
	}
	// A single PUT whose reply's ETag is the MD5 of what was sent needs no
	// HEAD: the store refused other bytes (Content-MD5) and says it keeps
	// those. A multipart object is read back (its size and ETag are the
	// whole's, which no one reply shows), and so is a single PUT whose
	// ETag is not an MD5 (SSE-KMS), unless SkipHead.
	if j.h.s3.SkipHead || (res.Parts == 0 && want.etag != "" && !j.h.s3.HeadAfterPut) {
		if want.etag != "" {
			checked = append([]string{"etag"}, checked...)
		}
		res.Verified = strings.Join(checked, ",")
		return res, nil
	}
	var oi minio.ObjectInfo
	err := j.h.call(ctx, j.rk, func(ctx context.Context) error {
		var err error
		oi, err = j.sc.core.StatObject(ctx, j.d.bucket, j.d.key, minio.StatObjectOptions{Checksum: true})
		return err
	})
	if err != nil {
		return Result{}, j.sc.s3Err("HEAD", j.d, err)
	}
	if oi.Size != res.Bytes {
		return Result{}, fmt.Errorf("upload to %s: the store holds %d bytes, %d were sent", j.a.Dest, oi.Size, res.Bytes)
	}
	// (A store that re-hashes what it keeps shows a multipart object's
	// plain MD5 on HEAD: the in-process test server does.)
	if et := strings.Trim(oi.ETag, `"`); et != res.ETag && (res.Parts == 0 || strings.Contains(et, "-")) {
		return Result{}, fmt.Errorf("upload to %s: the store's ETag is %q, the upload's was %q (replaced meanwhile?)", j.a.Dest, et, res.ETag)
	}
	head := []string{"size"}
	if want.etag != "" {
		head = append(head, "etag")
	}
	if err := checkSum("HEAD", oi.ChecksumSHA256); err != nil {
		return Result{}, err
	}
	if res.VersionID == "" {
		res.VersionID = oi.VersionID
	}
	res.Verified = strings.Join(append(head, checked...), ",")
	return res, nil
}

// sumCheck compares a SHA-256 checksum the store gave (base64, with
// "-<parts>" when composite) with want, and names the check.
func (j *job) sumCheck(got string, want wantSums) (string, error) {
	if b, n, ok := strings.Cut(got, "-"); ok {
		if want.composite == "" {
			return "", fmt.Errorf("the store's SHA-256 %s is a composite, of %s parts; this upload had none", got, n)
		}
		if got != want.composite {
			return "", fmt.Errorf("the store's composite SHA-256 (of the parts' SHA-256s) is %s, the parts' %s", b+"-"+n, want.composite)
		}
		return "sha256-composite", nil
	}
	switch {
	case got == want.sha:
		return "sha256", nil
	case want.composite != "" && got+"-"+strconv.Itoa(partsOf(want.composite)) == want.composite:
		// A composite without its part count (some stores leave it out).
		return "sha256-composite", nil
	}
	return "", fmt.Errorf("the store's SHA-256 is %s, the source's %s", got, want.sha)
}

// partsOf is the part count of a composite checksum.
func partsOf(composite string) int {
	i := strings.LastIndexByte(composite, '-')
	n, _ := strconv.Atoi(composite[i+1:])
	return n
}

// partSizeFor is the part size for a source of size bytes (-1: not known).
func (h *Handler) partSizeFor(size int64) (int64, error) {
	ps := h.partSize
	if size > 0 && (size+ps-1)/ps > maxParts {
		ps = (size + maxParts - 1) / maxParts
		ps = (ps + 1<<20 - 1) &^ (1<<20 - 1) // whole MiB
	}
	if ps > maxPartSize {
		return 0, worker.Permanent(fmt.Errorf("source of %d bytes: more than S3's largest object (10,000 parts of 5 GiB)", size))
	}
	return ps, nil
}

// part is one part read from the source.
type part struct {
	n        int
	off, len int64
	md5, sha []byte
	buf      []byte  // the part's bytes, as read once and hashed
	bp       *[]byte // buf's pooled buffer
	state    string  // the whole object's hash state after the part
}

// multipart sends src in parts of ps bytes: those the record shows stored
// (with the ETag of the source's bytes) are kept, the others sent,
// PartConcurrency at once. head, when set, is what was read of an http
// source of unknown size already.
func (j *job) multipart(ctx context.Context, src *source, ps int64, rec store.UploadRecord, found bool, kept map[int]string, head []byte) (Result, error) {
	h := j.h
	if found {
		j.uploadID = rec.ID
	} else {
		id, err := j.begin(ctx, src, ps)
		if err != nil {
			return Result{}, err
		}
		j.uploadID = id
	}
	w := newWhole()
	first := 1
	if src.off > 0 {
		// A ranged reply: the parts before src.off are kept, and the
		// hashes of the whole object go on from the record's state.
		k := int(src.off / ps)
		if src.off%ps != 0 || !w.restore(rec.Parts[k].State) {
			return Result{}, fmt.Errorf("upload to %s: cannot go on from byte %d", j.a.Dest, src.off)
		}
		first = k + 1
		j.progress(ctx, src.off)
	}
	var r io.Reader
	if src.body != nil {
		r = src.body
		if head != nil {
			r = io.MultiReader(bytes.NewReader(head), src.body)
		}
	}
	conc := h.conc
	sem := make(chan struct{}, conc)
	g, gctx := errgroup.WithContext(ctx)
	var mu sync.Mutex
	etags := map[int]string{}
	shas := map[int]string{} // base64, for Checksums
	for n := 1; n < first; n++ {
		etags[n] = kept[n]
		if b, err := hex.DecodeString(rec.Parts[n].SHA256); err == nil {
			shas[n] = base64.StdEncoding.EncodeToString(b)
		}
	}
	resumed := src.off
	var readErr error
	off := src.off
	for n := first; ; n++ {
		if n > maxParts {
			readErr = worker.Permanent(fmt.Errorf("source %s: more than 10,000 parts of %d bytes; raise PartSize", src.name, ps))
			break
		}
		if src.size >= 0 && off >= src.size && n > 1 {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-gctx.Done():
		}
		if gctx.Err() != nil {
			break
		}
		p := part{n: n, off: off}
		s := newSums()
		p.bp = bufs.get(int(ps))
		if src.file != nil {
			p.len = min(ps, src.size-off)
			p.buf = (*p.bp)[:p.len]
			k, err := src.file.ReadAt(p.buf, off)
			if k < len(p.buf) {
				if err == nil || errors.Is(err, io.EOF) {
					readErr = fmt.Errorf("source %s: %w (read %d bytes at %d, want %d)", src.name, errSourceChanged, k, off, p.len)
				} else {
					readErr = fmt.Errorf("read %s: %w", src.name, err)
				}
				break
			}
			s.Write(p.buf)
			w.Write(p.buf)
		} else {
			p.buf = *p.bp
			k, err := io.ReadFull(r, p.buf)
			if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
				readErr = fmt.Errorf("source GET %s: %w", src.name, err)
				break
			}
			if k == 0 && n > 1 {
				if src.size >= 0 && off != src.size {
					readErr = fmt.Errorf("source GET %s: ended at byte %d of %d", src.name, off, src.size)
				}
				<-sem
				break
			}
			p.buf = p.buf[:k]
			p.len = int64(k)
			s.Write(p.buf)
			w.Write(p.buf)
			p.state = w.state()
		}
		p.md5, p.sha = s.md5.Sum(nil), s.sha.Sum(nil)
		off += p.len
		if et, ok := kept[n]; ok && et == hex.EncodeToString(p.md5) {
			<-sem
			mu.Lock()
			etags[n] = et
			shas[n] = base64.StdEncoding.EncodeToString(p.sha)
			mu.Unlock()
			resumed += p.len
			j.progress(ctx, p.len)
			if p.state != "" && j.record && rec.Parts[n].State == "" {
				_, _ = store.UploadPartDone(ctx, h.rdb, j.q, t(j), j.uploadID, n, store.UploadPart{MD5: et, SHA256: hex.EncodeToString(p.sha), Size: p.len, State: p.state})
			}
			bufs.put(p.bp)
			continue
		}
		g.Go(func() error {
			defer func() { <-sem }()
			et, err := j.sendPart(gctx, src, p)
			if err != nil {
				return err // the buffer is not reused (see bufs)
			}
			bufs.put(p.bp)
			mu.Lock()
			etags[p.n] = et
			shas[p.n] = base64.StdEncoding.EncodeToString(p.sha)
			mu.Unlock()
			return nil
		})
		if src.body != nil && p.len < ps {
			break // a short read is the end of the stream
		}
	}
	gerr := g.Wait()
	if readErr == nil && gerr == nil {
		readErr = ctx.Err()
	}
	if gerr != nil {
		return Result{}, gerr
	}
	if readErr != nil {
		return Result{}, readErr
	}
	if err := src.check(); err != nil {
		return Result{}, err
	}
	if src.size >= 0 && off != src.size {
		return Result{}, fmt.Errorf("source %s: %w (%d bytes read, %d expected)", src.name, errSourceChanged, off, src.size)
	}
	// Complete with the parts in order; the multipart ETag is the MD5 of
	// their MD5s, "-" their count.
	nparts := len(etags)
	cps := make([]minio.CompletePart, 0, nparts)
	all := md5.New()
	for n := 1; n <= nparts; n++ {
		et, ok := etags[n]
		if !ok {
			return Result{}, fmt.Errorf("upload to %s: part %d of %d missing", j.a.Dest, n, nparts)
		}
		b, _ := hex.DecodeString(et)
		all.Write(b)
		cp := minio.CompletePart{PartNumber: n, ETag: et}
		if h.s3.Checksums {
			cp.ChecksumSHA256 = shas[n]
		}
		cps = append(cps, cp)
	}
	var info minio.UploadInfo
	err := h.call(ctx, j.rk, func(ctx context.Context) error {
		var err error
		info, err = j.sc.core.CompleteMultipartUpload(ctx, j.d.bucket, j.d.key, j.uploadID, cps, minio.PutObjectOptions{})
		return err
	})
	if err != nil {
		if noSuchUpload(err) {
			// Completed by an earlier try whose reply was lost, or aborted:
			// the record goes, and the HEAD below tells which.
			j.dropRecord(ctx)
		}
		return Result{}, j.sc.s3Err("complete multipart upload", j.d, err)
	}
	j.dropRecord(ctx)
	j.uploadID = ""
	res := Result{Bytes: off, SHA256: hex.EncodeToString(w.sha.Sum(nil)), CRC32C: crcHex(w.crc), Dest: j.a.Dest,
		ETag: strings.Trim(info.ETag, `"`), VersionID: info.VersionID, Parts: nparts, Resumed: resumed}
	want := ""
	if j.etagIsMD5() {
		want = fmt.Sprintf("%s-%d", hex.EncodeToString(all.Sum(nil)), nparts)
	}
	return j.verify(ctx, res, wantSums{etag: want, sha: base64.StdEncoding.EncodeToString(w.sha.Sum(nil)),
		composite: compositeSHA256(shas, nparts), reply: info.ChecksumSHA256})
}

// compositeSHA256 is the whole-object checksum S3 and MinIO give a
// multipart upload begun with x-amz-checksum-algorithm SHA256: the SHA-256
// of the parts' SHA-256 digests (raw, in part order), base64, "-" the
// number of parts. shas holds each part's SHA-256 in base64; "" if one is
// missing.
func compositeSHA256(shas map[int]string, nparts int) string {
	all := sha256.New()
	for n := 1; n <= nparts; n++ {
		b, err := base64.StdEncoding.DecodeString(shas[n])
		if err != nil || len(b) != sha256.Size {
			return ""
		}
		all.Write(b)
	}
	return fmt.Sprintf("%s-%d", base64.StdEncoding.EncodeToString(all.Sum(nil)), nparts)
}

// completedBefore reports whether the object at the destination is the
// file src uploaded in parts of the record's part size: the record's
// upload is gone (NoSuchUpload), and an earlier attempt may have completed
// it without its success being recorded. The file is read (nothing is
// sent) to make the multipart ETag of its parts — md5 of the parts' MD5s,
// "-<parts>"; each part's MD5 the record holds must agree — and a HEAD must
// show the file's size and that ETag (or, from a store that re-hashes what
// it keeps, the whole file's MD5). Then the record goes and the result
// counts every byte as resumed. An http(s) source, a fingerprint other
// than the record's, or an ETag that is not an MD5 (SSE-KMS) answers false.
func (j *job) completedBefore(ctx context.Context, src *source, rec store.UploadRecord) (Result, bool, error) {
	if src == nil || src.file == nil || !j.etagIsMD5() || rec.Fingerprint != src.fp || rec.Size != src.size || rec.PartSize < minPartSize || src.size <= 0 {
		return Result{}, false, nil
	}
	if ps, err := j.h.partSizeFor(src.size); err != nil || ps != rec.PartSize {
		return Result{}, false, nil
	}
	var oi minio.ObjectInfo
	err := j.h.call(ctx, j.rk, func(ctx context.Context) error {
		var err error
		oi, err = j.sc.core.StatObject(ctx, j.d.bucket, j.d.key, minio.StatObjectOptions{Checksum: true})
		return err
	})
	if err != nil {
		if minio.ToErrorResponse(err).StatusCode == http.StatusNotFound {
			return Result{}, false, nil
		}
		return Result{}, false, j.sc.s3Err("HEAD", j.d, err)
	}
	if oi.Size != src.size {
		return Result{}, false, nil
	}
	bp := bufs.get(int(rec.PartSize))
	defer bufs.put(bp)
	w, whole, all := newWhole(), md5.New(), md5.New()
	shas := map[int]string{}
	n := 0
	for off := int64(0); off < src.size; off += rec.PartSize {
		n++
		b := (*bp)[:min(rec.PartSize, src.size-off)]
		if k, err := src.file.ReadAt(b, off); k < len(b) {
			if err == nil || errors.Is(err, io.EOF) {
				return Result{}, false, fmt.Errorf("source %s: %w (read %d bytes at %d, want %d)", src.name, errSourceChanged, k, off, len(b))
			}
			return Result{}, false, fmt.Errorf("read %s: %w", src.name, err)
		}
		pm, psha := md5.Sum(b), sha256.Sum256(b)
		if p, ok := rec.Parts[n]; ok && p.MD5 != hex.EncodeToString(pm[:]) {
			return Result{}, false, nil
		}
		all.Write(pm[:])
		whole.Write(b)
		w.Write(b)
		shas[n] = base64.StdEncoding.EncodeToString(psha[:])
	}
	if err := src.check(); err != nil {
		return Result{}, false, err
	}
	want := fmt.Sprintf("%s-%d", hex.EncodeToString(all.Sum(nil)), n)
	et := strings.Trim(oi.ETag, `"`)
	if et != want && (strings.Contains(et, "-") || et != hex.EncodeToString(whole.Sum(nil))) {
		return Result{}, false, nil
	}
	verified := "size,etag"
	if oi.ChecksumSHA256 != "" {
		c, err := j.sumCheck(oi.ChecksumSHA256, wantSums{sha: base64.StdEncoding.EncodeToString(w.sha.Sum(nil)), composite: compositeSHA256(shas, n)})
		if err != nil {
			return Result{}, false, nil
		}
		verified += "," + c
	}
	j.uploadID = rec.ID
	j.dropRecord(ctx)
	j.uploadID = ""
	j.total = src.size
	j.progress(ctx, src.size)
	return Result{Bytes: src.size, SHA256: hex.EncodeToString(w.sha.Sum(nil)), CRC32C: crcHex(w.crc), Dest: j.a.Dest,
		ETag: et, VersionID: oi.VersionID, Parts: n, Resumed: src.size, Verified: verified}, true, nil
}

// dropRecord removes the task's record of the upload.
func (j *job) dropRecord(ctx context.Context) {
	if !j.record || j.uploadID == "" {
		return
	}
	if _, err := store.UploadEnd(context.WithoutCancel(ctx), j.h.rdb, j.q, t(j), j.uploadID); err != nil {
		j.h.log.Warn("upload: remove upload record", "dest", j.a.Dest, "upload_id", j.uploadID, "err", err)
	}
}

// begin starts a multipart upload and records it; if another attempt of
// the task recorded one first, this one's is aborted and the attempt fails
// (the next resumes the other).
func (j *job) begin(ctx context.Context, src *source, ps int64) (string, error) {
	var id string
	err := j.h.call(ctx, j.rk, func(ctx context.Context) error {
		var err error
		opts := j.opts
		if j.h.s3.Checksums {
			opts.UserMetadata = withHeader(opts.UserMetadata, "X-Amz-Checksum-Algorithm", "SHA256")
		}
		id, err = j.sc.core.NewMultipartUpload(ctx, j.d.bucket, j.d.key, opts)
		return err
	})
	if err != nil {
		return "", j.sc.s3Err("begin multipart upload", j.d, err)
	}
	if !j.record {
		return id, nil
	}
	got, err := store.UploadBegin(ctx, j.h.rdb, j.q, t(j), store.UploadRecord{ID: id, Bucket: j.d.bucket, Object: j.d.key,
		Dest: j.a.Dest, Fingerprint: src.fp, PartSize: ps, Size: src.size})
	if err != nil || got != id {
		j.uploadID = ""
		j.abortOnly(context.WithoutCancel(ctx), id)
		if err == nil {
			err = fmt.Errorf("upload to %s: another attempt of the task began upload %s first", j.a.Dest, got)
		}
		return "", err
	}
	return id, nil
}

// abortOnly aborts upload id, leaving any record.
func (j *job) abortOnly(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := j.h.call(ctx, j.rk, func(ctx context.Context) error {
		return j.sc.core.AbortMultipartUpload(ctx, j.d.bucket, j.d.key, id)
	}); err != nil && !noSuchUpload(err) {
		j.h.log.Warn("upload: abort multipart upload", "dest", j.a.Dest, "upload_id", id, "err", err)
	}
}

// listParts lists the stored parts of upload id.
func (j *job) listParts(ctx context.Context, id string) (map[int]minio.ObjectPart, error) {
	out := map[int]minio.ObjectPart{}
	marker := 0
	for {
		var res minio.ListObjectPartsResult
		err := j.h.call(ctx, j.rk, func(ctx context.Context) error {
			var err error
			res, err = j.sc.core.ListObjectParts(ctx, j.d.bucket, j.d.key, id, marker, 1000)
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, p := range res.ObjectParts {
			out[p.PartNumber] = p
		}
		if !res.IsTruncated || res.NextPartNumberMarker <= marker {
			return out, nil
		}
		marker = res.NextPartNumberMarker
	}
}

// sendPart sends part p and records it; it returns its ETag (hex MD5).
func (j *job) sendPart(ctx context.Context, src *source, p part) (string, error) {
	md5hex := hex.EncodeToString(p.md5)
	opts := minio.PutObjectPartOptions{
		Md5Base64:            base64.StdEncoding.EncodeToString(p.md5),
		Sha256Hex:            hex.EncodeToString(p.sha),
		DisableContentSha256: true,
	}
	if j.h.s3.Checksums {
		opts.CustomHeader = http.Header{"X-Amz-Checksum-Sha256": {base64.StdEncoding.EncodeToString(p.sha)}}
	}
	open := func() io.Reader { return bytes.NewReader(p.buf) }
	var op minio.ObjectPart
	err := j.h.call(ctx, j.rk, func(ctx context.Context) error {
		var err error
		op, err = j.sc.core.PutObjectPart(ctx, j.d.bucket, j.d.key, j.uploadID, p.n, j.body(ctx, open()), p.len, opts)
		return err
	})
	if err != nil {
		return "", j.sc.s3Err(fmt.Sprintf("PUT part %d", p.n), j.d, err)
	}
	et := strings.Trim(op.ETag, `"`)
	if j.etagIsMD5() && et != md5hex {
		return "", fmt.Errorf("upload to %s: part %d: the store's ETag %q is not the MD5 %s of what was sent", j.a.Dest, p.n, et, md5hex)
	}
	if j.record {
		ok, err := store.UploadPartDone(ctx, j.h.rdb, j.q, t(j), j.uploadID, p.n, store.UploadPart{MD5: et, SHA256: hex.EncodeToString(p.sha), Size: p.len, State: p.state})
		if err != nil {
			return "", err
		}
		if !ok {
			return "", fmt.Errorf("upload to %s: the task's upload record is no longer of upload %s", j.a.Dest, j.uploadID)
		}
	}
	j.progress(ctx, p.len)
	return et, nil
}
