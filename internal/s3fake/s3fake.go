// Package s3fake runs an S3-compatible server in process, on a loopback
// port, for tests, benchmarks and the demo: gofakes3 with its in-memory
// backend, behind a layer that checks the access key, injects faults
// (SlowDown, 429, errors, held or cut requests) and counts what arrived.
//
// What the server does, as found by this package's tests (gofakes3 v1.2.0
// plus this layer):
//
//   - Access: the access key id is read from the SigV4 Authorization header
//     (or the X-Amz-Credential query of a presigned URL) and must be the
//     server's; anything else, an anonymous request included, gets 403 with
//     an S3 error document (InvalidAccessKeyId, or AccessDenied without
//     credentials). Signatures themselves are not verified.
//   - Bodies: aws-chunked bodies (STREAMING-AWS4-HMAC-SHA256-PAYLOAD, with
//     or without a trailer, and STREAMING-UNSIGNED-PAYLOAD-TRAILER) are
//     decoded here for single PUTs and parts alike (gofakes3 alone decodes
//     them only for single PUTs, and not the trailer forms), so minio-go over
//     plain HTTP works. Chunk signatures are not verified.
//   - Content-MD5: verified by gofakes3 for single PUTs and parts; a
//     mismatch is 400 BadDigest and nothing is stored.
//   - x-amz-checksum-crc32, -crc32c, -sha1, -sha256 (header or trailer):
//     verified here; a mismatch is 400 BadDigest and nothing is stored; the
//     value is echoed in the reply's header, as S3 does, and kept per part
//     (PartInfo) and per single PUT (ObjectInfo). ListParts and
//     CompleteMultipartUpload do not return checksums (gofakes3 does not
//     know them), and no checksum of the whole multipart object is made.
//   - ETags: a single PUT's and a part's ETag is the hex MD5 of its bytes;
//     CompleteMultipartUpload answers "hex(MD5(part MD5s))-N"; but a later
//     HEAD or GET of that object shows the plain MD5 of its whole content
//     (the backend re-hashes what it stores).
//   - ListParts lists every stored part of an upload with number, size,
//     ETag (MD5) and time; a part sent again replaces the earlier one.
//   - Metadata: every X-Amz-* request header of a single PUT or of the
//     initiating request of a multipart upload is kept with the object, as
//     are Content-Type, Content-Disposition and Content-Encoding (the
//     transport headers of aws-chunked bodies are dropped here first), so
//     user metadata, x-amz-storage-class and x-amz-server-side-encryption
//     come back as sent; nothing is encrypted or tiered.
//   - Addressing: path style only (http://127.0.0.1:port/bucket/key);
//     GetBucketLocation answers, so a client without a region works.
//   - Memory: parts are held in memory until completion, when gofakes3
//     joins them into one buffer and the backend copies that into the
//     object it keeps: a 1 GB multipart object peaks at about 3 GB while
//     it completes and keeps 1 GB. This layer streams bodies through (a
//     64 KiB buffer for aws-chunked framing) and buffers only replies to
//     requests other than GET, which are small XML documents.
package s3fake

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// Options configure a Server.
type Options struct {
	AccessKey string   // default "fleet-access-key"
	SecretKey string   // default "fleet-secret-key"
	Buckets   []string // created at start
	// Fault, if set, is asked about every request before it is served; a
	// non-nil answer is served instead (or after Delay, or the connection is
	// cut). SetFault replaces it while the server runs. It is asked once
	// the access key was accepted, and sees an aws-chunked request already
	// set up for decoding (Content-Length the decoded size).
	Fault func(r *http.Request) *Fault
	// OnPart, if set, is called after a part upload was stored, before the
	// reply is written.
	OnPart func(p PartEvent)
	// OnBody, if set, is called for every read of a request body that
	// returned bytes (after aws-chunked decoding), with the server's clock
	// at that moment.
	OnBody func(r *http.Request, n int, at time.Time)
}

// Fault is an injected answer.
type Fault struct {
	Status     int           // e.g. 503
	Code       string        // S3 error code, e.g. "SlowDown"
	RetryAfter time.Duration // sent as Retry-After (whole seconds, rounded up) when > 0
	Delay      time.Duration // wait this long first
	Cut        bool          // close the connection without a reply
	// CutAfter, when > 0 with Cut, reads that many bytes of the request
	// body (decoded: counted in PartInfo.Received and Stats.BodyBytes)
	// before cutting the connection.
	CutAfter int64
}

// PartEvent is one stored part.
type PartEvent struct {
	Bucket, Key, UploadID string
	Number                int
	Bytes                 int64
}

// Stats are counters since start.
type Stats struct {
	Requests    int64
	PutObjects  int64 // single PUTs stored
	Parts       int64 // parts stored
	PartBytes   int64 // bytes of stored parts
	ObjectBytes int64 // bytes of stored single PUTs
	Aborted     int64 // multipart uploads aborted
	Completed   int64 // multipart uploads completed
	BadKey      int64 // requests refused for an unknown access key
	Faults      int64 // injected faults served
	Begun       int64 // multipart uploads begun
	BodyBytes   int64 // request body bytes read, stored or not (decoded)
}

// PartInfo is what arrived for one part number of one multipart upload.
type PartInfo struct {
	Number   int
	Received int64 // body bytes read for this number over every attempt
	Stored   int   // times a part with this number was stored
	Size     int64 // size of the last stored part
	ETag     string
	// Checksums of the last stored part, by algorithm ("CRC32C",
	// "SHA256", ...), base64 as sent, when the client sent any.
	Checksums map[string]string
}

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Size         int64
	ETag         string // as HEAD shows it: hex MD5 of the content, quoted
	ContentType  string
	StorageClass string            // x-amz-storage-class as sent, if any
	SSE          string            // x-amz-server-side-encryption as sent, if any
	Meta         map[string]string // user metadata, keys without X-Amz-Meta-
	Headers      map[string]string // everything the backend kept
	// Checksums sent with a single PUT (not kept for multipart objects).
	Checksums map[string]string
}

// Server is a running fake.
type Server struct {
	access, secret string
	backend        *s3mem.Backend
	up             *upstream // set in upstream mode (upstream.go)
	fake           http.Handler
	ln             net.Listener
	srv            *http.Server
	done           chan struct{}

	fault  atomic.Pointer[func(*http.Request) *Fault]
	onPart atomic.Pointer[func(PartEvent)]
	onBody atomic.Pointer[func(*http.Request, int, time.Time)]

	requests, puts, parts, partBytes, objectBytes    atomic.Int64
	aborted, completed, badKey, faults, begun, bodyN atomic.Int64

	mu       sync.Mutex
	open     map[string]string // upload id → "bucket/key"
	partInfo map[string]map[int]*PartInfo
	sums     map[string]map[string]string // "bucket/key" → checksums of the last single PUT
}

// New starts a server on 127.0.0.1 on a free port. With ASYNC_S3_UPSTREAM
// set it forwards to that server instead of serving from gofakes3 (see
// upstream.go; Options.AccessKey and SecretKey are then ignored).
func New(opts Options) (*Server, error) {
	s := &Server{
		access:   opts.AccessKey,
		secret:   opts.SecretKey,
		done:     make(chan struct{}),
		open:     map[string]string{},
		partInfo: map[string]map[int]*PartInfo{},
		sums:     map[string]map[string]string{},
	}
	handler := s.serve
	if up := UpstreamFromEnv(); up != "" {
		if err := newUpstream(s, up, opts.Buckets); err != nil {
			return nil, err
		}
		handler = s.serveUpstream
	} else {
		if s.access == "" {
			s.access = "fleet-access-key"
		}
		if s.secret == "" {
			s.secret = "fleet-secret-key"
		}
		s.backend = s3mem.New()
		for _, b := range opts.Buckets {
			if err := s.backend.CreateBucket(b); err != nil {
				return nil, fmt.Errorf("s3fake: bucket %q: %w", b, err)
			}
		}
		s.fake = gofakes3.New(s.backend, gofakes3.WithoutVersioning()).Server()
	}
	s.SetFault(opts.Fault)
	s.SetOnPart(opts.OnPart)
	s.SetOnBody(opts.OnBody)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		if s.up != nil {
			s.up.tr.CloseIdleConnections()
		}
		return nil, fmt.Errorf("s3fake: listen: %w", err)
	}
	s.ln = ln
	s.srv = &http.Server{Handler: http.HandlerFunc(handler), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// Endpoint is "127.0.0.1:port" (plain HTTP).
func (s *Server) Endpoint() string { return s.ln.Addr().String() }

// URL is "http://127.0.0.1:port".
func (s *Server) URL() string { return "http://" + s.Endpoint() }

// AccessKey and SecretKey are the credentials it accepts.
func (s *Server) AccessKey() string { return s.access }
func (s *Server) SecretKey() string { return s.secret }

// SetFault replaces Options.Fault (nil: no faults) for the requests that
// arrive from now on.
func (s *Server) SetFault(f func(r *http.Request) *Fault) {
	if f == nil {
		s.fault.Store(nil)
		return
	}
	s.fault.Store(&f)
}

// SetOnPart replaces Options.OnPart.
func (s *Server) SetOnPart(f func(p PartEvent)) {
	if f == nil {
		s.onPart.Store(nil)
		return
	}
	s.onPart.Store(&f)
}

// SetOnBody replaces Options.OnBody.
func (s *Server) SetOnBody(f func(r *http.Request, n int, at time.Time)) {
	if f == nil {
		s.onBody.Store(nil)
		return
	}
	s.onBody.Store(&f)
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Requests:    s.requests.Load(),
		PutObjects:  s.puts.Load(),
		Parts:       s.parts.Load(),
		PartBytes:   s.partBytes.Load(),
		ObjectBytes: s.objectBytes.Load(),
		Aborted:     s.aborted.Load(),
		Completed:   s.completed.Load(),
		BadKey:      s.badKey.Load(),
		Faults:      s.faults.Load(),
		Begun:       s.begun.Load(),
		BodyBytes:   s.bodyN.Load(),
	}
}

// OpenUploads lists the multipart uploads begun and neither completed nor
// aborted, as "bucket/key uploadID", sorted.
func (s *Server) OpenUploads() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.open))
	for id, bk := range s.open {
		out = append(out, bk+" "+id)
	}
	sort.Strings(out)
	return out
}

// Parts returns what arrived for each part number of an upload (begun,
// completed or aborted), by number ascending. The bytes sent again for the
// upload are the sum of Received less the sum of the final Size.
func (s *Server) Parts(uploadID string) []PartInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []PartInfo
	for _, p := range s.partInfo[uploadID] {
		c := *p
		c.Checksums = copyMap(p.Checksums)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out
}

// Object returns a stored object's bytes and user metadata (keys without
// the X-Amz-Meta- prefix, as minio-go's UserMetadata shows them).
func (s *Server) Object(bucket, key string) (data []byte, meta map[string]string, err error) {
	if s.up != nil {
		return s.upstreamObject(bucket, key)
	}
	obj, err := s.backend.GetObject(bucket, key, nil)
	if err != nil {
		return nil, nil, err
	}
	defer obj.Contents.Close()
	data = make([]byte, obj.Size)
	if _, err := io.ReadFull(obj.Contents, data); err != nil {
		return nil, nil, err
	}
	return data, userMeta(obj.Metadata), nil
}

// Info returns a stored object's description.
func (s *Server) Info(bucket, key string) (ObjectInfo, error) {
	if s.up != nil {
		return s.upstreamInfo(bucket, key)
	}
	obj, err := s.backend.HeadObject(bucket, key)
	if err != nil {
		return ObjectInfo{}, err
	}
	defer obj.Contents.Close()
	info := ObjectInfo{
		Size:         obj.Size,
		ETag:         `"` + fmt.Sprintf("%x", obj.Hash) + `"`,
		ContentType:  obj.Metadata["Content-Type"],
		StorageClass: obj.Metadata["X-Amz-Storage-Class"],
		SSE:          obj.Metadata["X-Amz-Server-Side-Encryption"],
		Meta:         userMeta(obj.Metadata),
		Headers:      copyMap(obj.Metadata),
	}
	s.mu.Lock()
	info.Checksums = copyMap(s.sums[bucket+"/"+key])
	s.mu.Unlock()
	return info, nil
}

// Close stops the server, cutting requests still running.
func (s *Server) Close() error {
	err := s.srv.Close()
	<-s.done
	if s.up != nil {
		s.up.tr.CloseIdleConnections()
	}
	return err
}

func userMeta(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if len(k) > len("X-Amz-Meta-") && strings.EqualFold(k[:len("X-Amz-Meta-")], "X-Amz-Meta-") {
			out[k[len("X-Amz-Meta-"):]] = v
		}
	}
	return out
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// errorDoc is an S3 error document.
type errorDoc struct {
	XMLName   xml.Name `xml:"Error"`
	Code      string   `xml:"Code"`
	Message   string   `xml:"Message"`
	Resource  string   `xml:"Resource"`
	RequestID string   `xml:"RequestId"`
}

func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	b, _ := xml.Marshal(errorDoc{Code: code, Message: msg, Resource: r.URL.Path, RequestID: "s3fake"})
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(b)
}

// accessKeyID returns the access key id a request is signed with, "" for
// none.
func accessKeyID(r *http.Request) string {
	if c := r.URL.Query().Get("X-Amz-Credential"); c != "" {
		id, _, _ := strings.Cut(c, "/")
		return id
	}
	auth := r.Header.Get("Authorization")
	if _, rest, ok := strings.Cut(auth, "Credential="); ok {
		id, _, _ := strings.Cut(rest, "/")
		return id
	}
	if v2, ok := strings.CutPrefix(auth, "AWS "); ok { // SigV2
		id, _, _ := strings.Cut(v2, ":")
		return id
	}
	return ""
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	switch id := accessKeyID(r); {
	case id == "":
		s.badKey.Add(1)
		writeError(w, r, http.StatusForbidden, "AccessDenied", "Access Denied: the request is not signed.")
		return
	case id != s.access:
		s.badKey.Add(1)
		writeError(w, r, http.StatusForbidden, "InvalidAccessKeyId",
			"The AWS Access Key Id you provided does not exist in our records.")
		return
	}
	q := r.URL.Query()
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	uploadID := q.Get("uploadId")
	isPart := r.Method == http.MethodPut && uploadID != "" && q.Get("partNumber") != ""
	isPut := r.Method == http.MethodPut && uploadID == "" && key != "" && r.Header.Get("X-Amz-Copy-Source") == ""

	var body *bodyReader
	if r.Method == http.MethodPut || r.Method == http.MethodPost {
		var err error
		body, err = s.prepareBody(r)
		if err != nil {
			writeError(w, r, http.StatusBadRequest, "InvalidRequest", err.Error())
			return
		}
		r.Body = body
	}
	partNo, _ := strconv.Atoi(q.Get("partNumber"))
	if isPart {
		defer func() { s.addReceived(uploadID, partNo, body.n) }()
	}
	if fp := s.fault.Load(); fp != nil {
		if f := (*fp)(r); f != nil {
			if !s.serveFault(w, r, f) {
				return
			}
		}
	}

	if r.Method == http.MethodGet {
		s.fake.ServeHTTP(w, r)
		return
	}
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	s.fake.ServeHTTP(rec, r)

	if rec.status == http.StatusOK && body != nil && body.sumErr {
		// Not seen: gofakes3 reads every body to its end and fails on
		// our BadDigest before storing. Should a path ever succeed after
		// the check failed, the client is still told.
		writeError(w, r, http.StatusBadRequest, "BadDigest", "checksum mismatch")
		return
	}
	if rec.status == http.StatusOK {
		switch {
		case isPart:
			s.parts.Add(1)
			s.partBytes.Add(body.n)
			s.partStored(uploadID, partNo, body.n, rec.header.Get("ETag"), body.sums)
			body.echo(rec.header)
			if fp := s.onPart.Load(); fp != nil {
				(*fp)(PartEvent{Bucket: bucket, Key: key, UploadID: uploadID, Number: partNo, Bytes: body.n})
			}
		case isPut:
			s.puts.Add(1)
			s.objectBytes.Add(body.n)
			s.mu.Lock()
			s.sums[bucket+"/"+key] = body.sums
			s.mu.Unlock()
			body.echo(rec.header)
		case r.Method == http.MethodPost && q.Has("uploads"):
			s.noteBegun(rec, bucket, key)
		case r.Method == http.MethodPost && uploadID != "":
			s.completed.Add(1)
			s.closeUpload(uploadID)
		}
	}
	s.reply(w, r, rec, uploadID)
}

// serveFault serves f and reports whether the request is to be served
// normally after all (a pure Delay).
func (s *Server) serveFault(w http.ResponseWriter, r *http.Request, f *Fault) bool {
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			s.faults.Add(1)
			return false
		}
	}
	if !f.Cut && f.Status == 0 {
		s.faults.Add(1)
		return true
	}
	s.faults.Add(1)
	if f.Cut {
		if f.CutAfter > 0 {
			if wr, ok := r.Body.(*watchReader); ok {
				wr.readPayload(f.CutAfter)
			} else {
				_, _ = io.CopyN(io.Discard, r.Body, f.CutAfter)
			}
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			panic(http.ErrAbortHandler)
		}
		conn, _, err := hj.Hijack()
		if err == nil {
			_ = conn.Close()
		}
		return false
	}
	if f.RetryAfter > 0 {
		secs := (f.RetryAfter + time.Second - 1) / time.Second
		w.Header().Set("Retry-After", strconv.FormatInt(int64(secs), 10))
	}
	code := f.Code
	if code == "" {
		code = http.StatusText(f.Status)
	}
	writeError(w, r, f.Status, code, "injected fault: "+code)
	return false
}

func (s *Server) closeUpload(id string) {
	s.mu.Lock()
	delete(s.open, id)
	s.mu.Unlock()
}

func (s *Server) part(id string, n int) *PartInfo {
	m := s.partInfo[id]
	if m == nil {
		m = map[int]*PartInfo{}
		s.partInfo[id] = m
	}
	p := m[n]
	if p == nil {
		p = &PartInfo{Number: n}
		m[n] = p
	}
	return p
}

func (s *Server) addReceived(id string, n int, bytes int64) {
	s.mu.Lock()
	s.part(id, n).Received += bytes
	s.mu.Unlock()
}

func (s *Server) partStored(id string, n int, size int64, etag string, sums map[string]string) {
	s.mu.Lock()
	p := s.part(id, n)
	p.Stored++
	p.Size = size
	p.ETag = etag
	p.Checksums = sums
	s.mu.Unlock()
}

// recorder holds a reply until the layer has looked at it (replies to
// everything but GET are small XML documents or empty).
type recorder struct {
	header http.Header
	status int
	wrote  bool
	buf    bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
}
func (r *recorder) Write(p []byte) (int, error) {
	r.wrote = true
	return r.buf.Write(p)
}

var checksumAlgs = []string{"CRC32", "CRC32C", "SHA1", "SHA256"}

func newHash(alg string) hash.Hash {
	switch alg {
	case "CRC32":
		return crc32.NewIEEE()
	case "CRC32C":
		return crc32.New(crc32.MakeTable(crc32.Castagnoli))
	case "SHA1":
		return sha1.New()
	default:
		return sha256.New()
	}
}

// prepareBody decodes an aws-chunked body, drops its transport headers so
// the backend neither sees nor stores them, and sets up checksum checks.
func (s *Server) prepareBody(r *http.Request) (*bodyReader, error) {
	b := &bodyReader{s: s, r: r, raw: r.Body, src: r.Body}
	mode := r.Header.Get("X-Amz-Content-Sha256")
	if strings.HasPrefix(mode, "STREAMING-") {
		dl, err := strconv.ParseInt(r.Header.Get("X-Amz-Decoded-Content-Length"), 10, 64)
		if err != nil || dl < 0 {
			return nil, errors.New("aws-chunked body without a valid x-amz-decoded-content-length")
		}
		b.chunked = &chunkReader{br: bufio.NewReaderSize(r.Body, 64<<10)}
		b.src = b.chunked
		r.ContentLength = dl
		r.Header.Set("Content-Length", strconv.FormatInt(dl, 10))
		r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
		r.Header.Del("X-Amz-Decoded-Content-Length")
		var enc []string
		for _, e := range strings.Split(r.Header.Get("Content-Encoding"), ",") {
			if e = strings.TrimSpace(e); e != "" && !strings.EqualFold(e, "aws-chunked") {
				enc = append(enc, e)
			}
		}
		if len(enc) == 0 {
			r.Header.Del("Content-Encoding")
		} else {
			r.Header.Set("Content-Encoding", strings.Join(enc, ","))
		}
	}
	trailer := strings.ToUpper(r.Header.Get("X-Amz-Trailer"))
	r.Header.Del("X-Amz-Trailer")
	for _, alg := range checksumAlgs {
		h := "X-Amz-Checksum-" + alg
		if v := r.Header.Get(h); v != "" {
			b.want = append(b.want, want{alg: alg, value: v})
		} else if trailer == strings.ToUpper(h) {
			b.want = append(b.want, want{alg: alg, trailer: true})
		}
	}
	for i := range b.want {
		b.want[i].h = newHash(b.want[i].alg)
	}
	return b, nil
}

type want struct {
	alg, value string
	trailer    bool
	h          hash.Hash
}

// bodyReader is the request body the backend reads: decoded, counted,
// checksummed.
type bodyReader struct {
	s       *Server
	r       *http.Request
	raw     io.ReadCloser
	src     io.Reader
	chunked *chunkReader
	n       int64
	want    []want
	sums    map[string]string
	sumErr  bool
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.src.Read(p)
	if n > 0 {
		b.n += int64(n)
		b.s.bodyN.Add(int64(n))
		for _, w := range b.want {
			w.h.Write(p[:n])
		}
		if fp := b.s.onBody.Load(); fp != nil {
			(*fp)(b.r, n, time.Now())
		}
	}
	if err == io.EOF && len(b.want) > 0 && b.sums == nil {
		b.sums = map[string]string{}
		for _, w := range b.want {
			v := w.value
			if w.trailer && b.chunked != nil {
				v = b.chunked.trailers["x-amz-checksum-"+strings.ToLower(w.alg)]
			}
			got := base64.StdEncoding.EncodeToString(w.h.Sum(nil))
			if v != got {
				b.sumErr = true
				return n, gofakes3.ErrBadDigest
			}
			b.sums[w.alg] = got
		}
	}
	return n, err
}

func (b *bodyReader) Close() error { return b.raw.Close() }

// echo sets the verified checksums on a reply, as S3 does.
func (b *bodyReader) echo(h http.Header) {
	for alg, v := range b.sums {
		h.Set("X-Amz-Checksum-"+alg, v)
	}
}

// chunkReader decodes an aws-chunked body: "hex-size[;chunk-signature=…]\r\n"
// data "\r\n" …, a last chunk of size 0, then optional trailer lines and
// an empty line.
type chunkReader struct {
	br       *bufio.Reader
	left     int64 // bytes left in the current chunk
	done     bool
	trailers map[string]string
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	if c.left == 0 {
		line, err := c.line()
		if err != nil {
			return 0, err
		}
		sz, _, _ := strings.Cut(line, ";")
		size, err := strconv.ParseInt(strings.TrimSpace(sz), 16, 64)
		if err != nil || size < 0 {
			return 0, fmt.Errorf("aws-chunked: bad chunk header %q", line)
		}
		if size == 0 {
			c.done = true
			c.trailers = map[string]string{}
			for {
				l, err := c.line()
				if err == io.EOF || (err == nil && l == "") {
					break
				}
				if err != nil {
					return 0, err
				}
				k, v, _ := strings.Cut(l, ":")
				c.trailers[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
			return 0, io.EOF
		}
		c.left = size
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.br.Read(p)
	c.left -= int64(n)
	if err == io.EOF {
		return n, io.ErrUnexpectedEOF
	}
	if err != nil {
		return n, err
	}
	if c.left == 0 {
		if l, err := c.line(); err != nil || l != "" {
			return n, errors.New("aws-chunked: chunk not followed by CRLF")
		}
	}
	return n, nil
}

func (c *chunkReader) line() (string, error) {
	l, err := c.br.ReadString('\n')
	if err != nil {
		if err == io.EOF && l != "" {
			return "", io.ErrUnexpectedEOF
		}
		return "", err
	}
	return strings.TrimRight(l, "\r\n"), nil
}

// noteBegun tracks the multipart upload a recorded reply to a begin names.
func (s *Server) noteBegun(rec *recorder, bucket, key string) {
	var res struct {
		UploadID string `xml:"UploadId"`
	}
	if xml.Unmarshal(rec.buf.Bytes(), &res) == nil && res.UploadID != "" {
		s.begun.Add(1)
		s.mu.Lock()
		s.open[res.UploadID] = bucket + "/" + key
		s.mu.Unlock()
	}
}

// reply counts an abort the recorded reply confirms, then writes that
// reply to the client (both serving modes end so).
func (s *Server) reply(w http.ResponseWriter, r *http.Request, rec *recorder, uploadID string) {
	if r.Method == http.MethodDelete && uploadID != "" && rec.status == http.StatusNoContent {
		s.aborted.Add(1)
		s.closeUpload(uploadID)
	}
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.status)
	_, _ = w.Write(rec.buf.Bytes())
}
