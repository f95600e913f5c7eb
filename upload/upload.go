// Package upload is the task handler of the upload use case: it copies a
// file to a destination and returns the size and checksums of what it sent.
// The deployable worker (cmd/worker) registers it; a worker binary of your
// own can too, with Register.
//
// Sources are files under the configured roots, or http(s) URLs (streamed:
// a GET read once, in order). Destinations are a directory on the worker's
// machine ("file:///dir/name" or an absolute path), a URL that accepts an
// HTTP PUT, or S3-compatible object storage: "s3://bucket/key", at the
// endpoint of Config.S3 (AWS S3, MinIO, R2, GCS's S3 API...).
//
// # S3 destinations
//
// Objects up to Config.MultipartThreshold go in one PUT; larger ones in a
// multipart upload of Config.PartSize parts (grown to keep a known size
// within S3's 10,000 parts), Config.PartConcurrency of them at once. Each
// part is read once into a pooled buffer, hashed and sent from it: a
// source (file or http(s)) holds at most PartConcurrency parts in memory,
// never the whole object. A file of up to 8 MiB sent in one PUT is read
// once into a buffer the same way; a larger one is read twice (a hashing
// pass, then the send). A source of unknown length (a chunked reply) is
// read up to the threshold first to choose.
//
// Integrity: every request carries the Content-MD5 of its bytes (the store
// refuses other bytes) and their SHA-256 as the signed payload hash
// (S3Config.Checksums adds x-amz-checksum-sha256, which the store checks
// and keeps). The whole object's SHA-256 and CRC32C are computed as it is
// read and returned in Result. After the upload the handler checks the
// store's ETag (the MD5 of a single PUT; the MD5 of the parts' MD5s,
// "-<parts>", of a multipart upload; not with SSE-KMS, whose ETags are not
// MD5s) and the checksum a reply echoes. A multipart object (and a single
// PUT without an MD5 ETag) is read back with HEAD: its size, its ETag, and
// its SHA-256 when the store returns one — with S3Config.Checksums a
// multipart object's composite checksum (the SHA-256 of the parts'
// SHA-256s, "-<parts>", as AWS S3 and MinIO give it on completion and
// HEAD), compared with the one of the parts sent. A single PUT's reply is
// its verification (S3Config.HeadAfterPut reads it back too).
// Result.Verified lists what was checked ("etag,sha256" for a single PUT,
// "size,etag,sha256-composite" for a multipart one), never more:
// a store that returns no checksum leaves the sha256 entries out. A source that changes during an attempt (a file's
// size, modification time or inode; bytes that no longer hash as they did)
// fails the attempt; its multipart upload is aborted, so that the next
// attempt starts over from the new content.
//
// Resume: with Config.Redis, a multipart upload is recorded with its task
// (the upload id, the part size, the source's fingerprint, each part's MD5
// and SHA-256). A later attempt of the task — a retry, or a reclaim after
// the worker died — lists the parts the store holds and keeps every one
// whose ETag is the MD5 of the source's bytes for it; it sends the others
// (Result.Resumed counts the bytes kept). What is sent twice is at most the
// PartConcurrency parts that were in flight. An http(s) source that
// serves ranges and a strong ETag is asked only for what follows the
// stored parts (If-Range), and the whole object's hashes go on from the
// state recorded after them; else it is read from the start again.
//
// Aborts: the multipart upload of an attempt that ends the task — a
// permanent error, the last attempt, the task cancelled while it runs —
// is aborted by the handler, and the record removed. An attempt stopped
// by its worker (a shutdown, a lost lease) keeps both, even the last: the
// task is handed back with the same attempt number. Handler.Sweep (and
// RunSweeper) aborts those of tasks that ended where no handler saw it:
// cancelled while waiting for a retry, dead after their worker crashed.
// Add a lifecycle rule AbortIncompleteMultipartUpload to the bucket as
// well: it removes what both miss (a record lost with Redis).
//
// Errors: credentials the store refuses (InvalidAccessKeyId,
// SignatureDoesNotMatch, AccessDenied, an expired token), a missing
// bucket, a KMS key the store does not know, bad arguments and other
// 400s fail the task for good
// (worker.Permanent), saying what to check. SlowDown (503) and 429 are
// sent again within the attempt after the reply's Retry-After (bounded by
// Config.ThrottleRetries and ThrottleWait), then end the attempt with
// worker.RetryAfter of that hint. Other failures (5xx, a broken
// connection) fail the attempt, and the task's retries go on (resuming).
//
// Limits: every request to a destination takes a token of Config.RequestRate
// on its key ("s3:<endpoint>/<bucket>", "http:<host>"), shared across the
// fleet, and the bytes sent are held to Config.Bandwidth on the same key.
//
// Progress: the handler reports the bytes stored (kept parts included) of
// the total with worker.ReportProgress as parts complete.
package upload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/ratelimit"
	"github.com/taskfleet/async/worker"
)

// Args is one upload: the file at Src (a path on the worker's machine) to
// Dest, either "file:///dir/name" (or a plain absolute path) or an
// "http://" / "https://" URL that accepts PUT.
type Args struct {
	Src  string `msgpack:"src"`
	Dest string `msgpack:"dest"`

	// Object options, for s3:// destinations (Config.S3 has the defaults).
	ContentType  string            `msgpack:"content_type,omitempty"`  // default: from the name's extension, else application/octet-stream
	Metadata     map[string]string `msgpack:"metadata,omitempty"`      // user metadata (x-amz-meta-*)
	StorageClass string            `msgpack:"storage_class,omitempty"` // e.g. STANDARD_IA
	SSE          string            `msgpack:"sse,omitempty"`           // "", "AES256" or "aws:kms"
	SSEKMSKeyID  string            `msgpack:"sse_kms_key_id,omitempty"`
}

// Kind is "upload".
func (Args) Kind() string { return "upload" }

// Result is what an upload sent.
type Result struct {
	Bytes  int64  `msgpack:"bytes"`
	SHA256 string `msgpack:"sha256"` // hex, of the whole object
	Dest   string `msgpack:"dest"`

	CRC32C    string `msgpack:"crc32c,omitempty"`     // hex, of the whole object (s3://)
	ETag      string `msgpack:"etag,omitempty"`       // as the store returned it (s3://)
	VersionID string `msgpack:"version_id,omitempty"` // when the bucket keeps versions
	Parts     int    `msgpack:"parts,omitempty"`      // 0 for a single PUT
	Resumed   int64  `msgpack:"resumed,omitempty"`    // bytes an earlier attempt had stored, not sent again
	Verified  string `msgpack:"verified,omitempty"`   // what was checked after the upload, e.g. "size,etag,sha256" or "size,etag,sha256-composite"
}

// Config limits what uploads may touch.
type Config struct {
	// Roots are the directories files may be read from and written to
	// (after cleaning, a path must lie inside one). Required for file
	// sources and destinations; an upload outside them fails permanently.
	Roots []string

	// HTTPClient sends PUTs and fetches http(s) sources. Defaults to a
	// client with a 5-minute timeout.
	HTTPClient *http.Client

	// Redis keeps what a multipart upload has done (so that a later
	// attempt resumes it) and the per-destination limits; give it the
	// worker's (the Worker does not lend its own). Without it s3://
	// uploads still work, but an attempt that fails aborts its multipart
	// upload (there is nothing to resume it from), and RequestRate and
	// Bandwidth are refused. Progress goes through the worker
	// (worker.ReportProgress) either way.
	Redis redis.UniversalClient

	// S3 configures s3:// destinations.
	S3 S3Config

	// PartSize is the size of a multipart upload's parts (default 16 MiB;
	// at least 5 MiB; grown as needed to keep a known size within 10,000
	// parts). Objects up to MultipartThreshold (default PartSize) go in one
	// PUT. PartConcurrency parts of one task are sent at once (default 4).
	// Each part is read once into a buffer and sent from it: a multipart
	// upload holds at most PartConcurrency × PartSize bytes (64 MiB with
	// the defaults); a single PUT of a file up to 8 MiB holds the file.
	PartSize           int64
	MultipartThreshold int64
	PartConcurrency    int

	// RequestRate limits requests per destination across the fleet: every
	// request to a bucket (key "s3:<endpoint>/<bucket>") or to an http(s)
	// host (key "http:<host>", for PUT destinations and GET sources) takes
	// a token first. Zero Rate means DefaultRequestRate (3,500 per second);
	// a negative Rate turns the limit off. Bandwidth limits the bytes sent
	// per destination across the fleet, on the same keys; zero means
	// unlimited. Both need Redis.
	RequestRate ratelimit.Limit
	Bandwidth   ratelimit.Bandwidth

	// ThrottleRetries is how many times one request the store answered
	// with SlowDown (503) or 429 is sent again within the attempt, each
	// after the reply's Retry-After (else a short backoff), before the
	// attempt fails with worker.RetryAfter of the last hint (default 3).
	// A hint longer than ThrottleWait (default 10s) ends the attempt at
	// once, the same way: the task waits in Redis, not in the handler.
	ThrottleRetries int
	ThrottleWait    time.Duration

	// Logger receives what the handler cannot return (an abort that
	// failed, say). Defaults to slog.Default().
	Logger *slog.Logger
}

// S3Config says how to reach S3-compatible storage. Credentials come from
// AccessKey/SecretKey when set, else the standard environment
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), else the
// shared credentials file's Profile (AWS_PROFILE, default "default").
type S3Config struct {
	Endpoint  string // host[:port]; default s3.amazonaws.com (env AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, a URL)
	Region    string // default AWS_REGION, else us-east-1
	PathStyle bool   // bucket in the path rather than the host name (MinIO, most self-hosted stores)
	Insecure  bool   // plain HTTP (test servers on loopback)
	Profile   string
	AccessKey string
	SecretKey string
	Token     string

	// Checksums sends each part's (and a single PUT's) SHA-256 as
	// x-amz-checksum-sha256 too, and begins multipart uploads with
	// x-amz-checksum-algorithm SHA256: the store verifies the bytes against
	// it and keeps it. The SHA-256 is always the request's signed payload
	// hash, and Content-MD5 is always sent; turn this on for stores that
	// know the checksum headers (AWS S3, recent MinIO; the in-process test
	// server verifies them too).
	Checksums bool

	// SkipHead leaves out the HEAD after each upload: Result.Verified then
	// lists only what the upload's own replies showed ("etag"). Content-MD5
	// still makes the store refuse other bytes; the HEAD adds the size as
	// stored, and a request per object. By default only a multipart
	// upload is read back (and a single PUT whose ETag is not an MD5, with
	// SSE-KMS): a single PUT's reply, its ETag the MD5 of what was sent,
	// is its verification. HeadAfterPut reads single PUTs back too
	// (Verified "size,etag", a request more per small object).
	SkipHead     bool
	HeadAfterPut bool

	// Defaults for the object options of Args.
	StorageClass string
	SSE          string
	SSEKMSKeyID  string
}

// Register registers the upload handler on w.
func Register(w *worker.Worker, cfg Config) error {
	h, err := New(cfg)
	if err != nil {
		return err
	}
	worker.Handle(w, h.Run)
	return nil
}

// Handler runs uploads. It is safe for concurrent use; its S3 clients are
// made on first use and kept, one per endpoint, region and credentials.
type Handler struct {
	roots []string
	hc    *http.Client
	rdb   redis.UniversalClient
	s3    S3Config
	log   *slog.Logger

	partSize, threshold int64
	conc                int
	throttleRetries     int
	throttleWait        time.Duration

	rate  rateWaiter
	bw    *ratelimit.BandwidthLimiter
	conns conns

	cmu sync.Mutex
	cl  *client.Client // for Sweep
}

// rateWaiter is the request limiter (none without Redis).
type rateWaiter interface {
	Wait(ctx context.Context, key string, n int) error
}

type noLimit struct{}

func (noLimit) Wait(context.Context, string, int) error { return nil }

// DefaultRequestRate is Config.RequestRate's default: 3,500 requests per
// second per destination, 350 at once (a tenth of a second's worth). 3,500
// is the rate AWS S3 documents for PUT, COPY, POST and DELETE requests per
// prefix of a bucket: a fleet of small uploads (one PUT each) stays
// within what S3 serves without SlowDown. Lower it for a store that
// allows less; a multipart upload takes a token per part, besides its
// begin, completion and HEAD.
var DefaultRequestRate = ratelimit.Limit{Rate: 3500, Per: time.Second, Burst: 350}

// New checks cfg and returns a Handler.
func New(cfg Config) (*Handler, error) {
	h := &Handler{hc: cfg.HTTPClient, rdb: cfg.Redis, s3: cfg.S3, log: cfg.Logger,
		partSize: cfg.PartSize, threshold: cfg.MultipartThreshold, conc: cfg.PartConcurrency,
		throttleRetries: cfg.ThrottleRetries, throttleWait: cfg.ThrottleWait}
	if h.hc == nil {
		h.hc = &http.Client{Timeout: 5 * time.Minute}
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	switch {
	case h.partSize == 0:
		h.partSize = 16 << 20
	case h.partSize < minPartSize || h.partSize > maxPartSize:
		return nil, fmt.Errorf("upload: PartSize %d is not within S3's 5 MiB to 5 GiB", h.partSize)
	}
	switch {
	case h.threshold == 0:
		h.threshold = h.partSize
	case h.threshold < 0 || h.threshold > maxPartSize:
		return nil, fmt.Errorf("upload: MultipartThreshold %d is not within 1 byte to 5 GiB", h.threshold)
	}
	switch {
	case h.conc == 0:
		h.conc = 4
	case h.conc < 0:
		return nil, fmt.Errorf("upload: PartConcurrency %d is negative", h.conc)
	}
	if h.throttleRetries == 0 {
		h.throttleRetries = 3
	}
	if h.throttleWait == 0 {
		h.throttleWait = 10 * time.Second
	}
	if h.throttleRetries < 0 || h.throttleWait < 0 {
		return nil, errors.New("upload: ThrottleRetries and ThrottleWait must not be negative")
	}
	if _, _, err := endpointOf(cfg.S3); err != nil {
		return nil, err
	}
	if _, err := sseOf(cfg.S3.SSE, cfg.S3.SSEKMSKeyID); err != nil {
		return nil, fmt.Errorf("upload: S3Config: %w", err)
	}
	h.rate = noLimit{}
	if h.rdb != nil {
		lim := cfg.RequestRate
		if lim.Rate == 0 {
			lim = DefaultRequestRate
		}
		if lim.Rate > 0 {
			if err := lim.Validate(); err != nil {
				return nil, fmt.Errorf("upload: RequestRate: %w", err)
			}
			h.rate = ratelimit.New(h.rdb, lim)
		}
		if cfg.Bandwidth != (ratelimit.Bandwidth{}) {
			if err := cfg.Bandwidth.Validate(); err != nil {
				return nil, fmt.Errorf("upload: Bandwidth: %w", err)
			}
			h.bw = ratelimit.NewBandwidth(h.rdb, cfg.Bandwidth)
		}
	} else if cfg.Bandwidth != (ratelimit.Bandwidth{}) || cfg.RequestRate.Rate > 0 {
		return nil, errors.New("upload: RequestRate and Bandwidth need Config.Redis")
	}
	h.conns.tr = hintTransport{next: defaultTransport()}
	for _, r := range cfg.Roots {
		abs, err := filepath.Abs(r)
		if err != nil {
			return nil, fmt.Errorf("upload: root %q: %w", r, err)
		}
		h.roots = append(h.roots, filepath.Clean(abs))
	}
	return h, nil
}

// defaultTransport is http.DefaultTransport's settings, with more idle
// connections per host (parts go PartConcurrency at once, per task).
func defaultTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return tr
}

// Close closes the idle connections of the handler's S3 clients, and the
// client Sweep made.
func (h *Handler) Close() {
	h.cmu.Lock()
	if h.cl != nil {
		_ = h.cl.Close()
		h.cl = nil
	}
	h.cmu.Unlock()
	if tr, ok := h.conns.tr.(hintTransport); ok {
		if t, ok := tr.next.(*http.Transport); ok {
			t.CloseIdleConnections()
		}
	}
}

// call runs one request of f on the destination with rate key rk: it takes
// a token of the request limit first, and sends again what the store
// throttled (SlowDown, 429), after the reply's Retry-After, up to
// ThrottleRetries times; then, or when the hint is longer than
// ThrottleWait, it returns worker.RetryAfter(hint) so that the task waits
// in Redis.
func (h *Handler) call(ctx context.Context, rk string, f func(ctx context.Context) error) error {
	backoff := 200 * time.Millisecond
	for try := 0; ; try++ {
		if err := h.rate.Wait(ctx, rk, 1); err != nil {
			return err
		}
		hint := &retryHint{}
		err := f(context.WithValue(ctx, hintKey{}, hint))
		if err == nil || !throttled(err) {
			return err
		}
		d, ok := hint.get()
		if !ok {
			d = backoff
			backoff = min(2*backoff, 5*time.Second)
		}
		if try >= h.throttleRetries || d > h.throttleWait {
			return worker.RetryAfter(max(d, time.Second), fmt.Errorf("the store asks to slow down (%s) after %d tries: %w", minioCode(err), try+1, err))
		}
		tm := time.NewTimer(d)
		select {
		case <-tm.C:
		case <-ctx.Done():
			tm.Stop()
			return ctx.Err()
		}
	}
}

func isHTTP(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// Run performs one upload (see the package doc). Failures to reach the
// destination are retried (the task's attempts); bad arguments fail
// permanently. Outside a worker (no task in ctx) an s3:// upload keeps no
// record and aborts a multipart upload that fails.
func (h *Handler) Run(ctx context.Context, a Args) (Result, error) {
	if strings.HasPrefix(a.Dest, "s3://") {
		d, err := parseS3(a.Dest)
		if err != nil {
			return Result{}, err
		}
		if !isHTTP(a.Src) {
			if _, err := h.inRoots(a.Src); err != nil {
				return Result{}, err
			}
		}
		return h.toS3(ctx, a, d)
	}
	u, err := url.Parse(a.Dest)
	if err != nil {
		return Result{}, worker.Permanent(fmt.Errorf("destination %q: %w", a.Dest, err))
	}
	if u.Scheme != "" && u.Scheme != "file" && u.Scheme != "http" && u.Scheme != "https" {
		return Result{}, worker.Permanent(fmt.Errorf("destination %q: scheme %q is not file, http, https or s3", a.Dest, u.Scheme))
	}
	var src *source
	if isHTTP(a.Src) {
		src, err = h.openHTTP(ctx, a.Src, 0, "")
	} else {
		var p string
		if p, err = h.inRoots(a.Src); err == nil {
			src, err = openFile(p)
		}
	}
	if err != nil {
		return Result{}, err
	}
	defer src.Close()
	r := io.Reader(src.body)
	if src.file != nil {
		r = src.file
	}
	switch u.Scheme {
	case "", "file":
		p := a.Dest
		if u.Scheme == "file" {
			p = u.Path
		}
		return h.toFile(r, p)
	}
	return h.toHTTP(ctx, r, src.size, a.Dest)
}

func (h *Handler) inRoots(p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", worker.Permanent(fmt.Errorf("path %q is not absolute", p))
	}
	c := filepath.Clean(p)
	for _, r := range h.roots {
		if c == r || strings.HasPrefix(c, r+string(filepath.Separator)) {
			return c, nil
		}
	}
	return "", worker.Permanent(fmt.Errorf("path %q is outside the upload roots %v", p, h.roots))
}

// toFile writes to a temporary file next to the destination and renames it
// into place, so a reader never sees half a file, and a retry starts over.
func (h *Handler) toFile(src io.Reader, dest string) (Result, error) {
	dst, err := h.inRoots(dest)
	if err != nil {
		return Result{}, err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return Result{}, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".part-*")
	if err != nil {
		return Result{}, err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, sum), src)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644) // CreateTemp makes it 0600
	}
	if err != nil {
		return Result{}, err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return Result{}, err
	}
	return Result{Bytes: n, SHA256: hex.EncodeToString(sum.Sum(nil)), Dest: "file://" + dst}, nil
}

// toHTTP sends src (size bytes, -1 when not known: chunked) in one PUT.
func (h *Handler) toHTTP(ctx context.Context, src io.Reader, size int64, dest string) (Result, error) {
	sum := sha256.New()
	cnt := &counter{}
	body := io.TeeReader(src, io.MultiWriter(sum, cnt))
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, dest, body)
	if err != nil {
		return Result{}, worker.Permanent(err)
	}
	req.ContentLength = size
	if h.rdb != nil {
		if err := h.rate.Wait(ctx, rateKey("http", req.URL.Host), 1); err != nil {
			return Result{}, err
		}
		if h.bw != nil {
			req.Body = io.NopCloser(h.bw.Reader(ctx, rateKey("http", req.URL.Host), body))
		}
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		return Result{}, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return Result{Bytes: cnt.n, SHA256: hex.EncodeToString(sum.Sum(nil)), Dest: dest}, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable:
		err := fmt.Errorf("PUT %s: %s", dest, resp.Status)
		if secs, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && secs >= 0 {
			return Result{}, worker.RetryAfter(time.Duration(secs)*time.Second, err)
		}
		return Result{}, err // retried with the worker's backoff
	case resp.StatusCode >= 500:
		return Result{}, fmt.Errorf("PUT %s: %s", dest, resp.Status) // retried
	default:
		return Result{}, worker.Permanent(fmt.Errorf("PUT %s: %s", dest, resp.Status))
	}
}

type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
