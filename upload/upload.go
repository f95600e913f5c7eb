// Package upload is the task handler of the upload use case: it copies a
// file to a destination (a directory on the worker's machine, or an HTTP
// PUT to a URL) and returns the size and SHA-256 of what it sent. The
// deployable worker (cmd/worker) registers it; a worker binary of your own
// can too, with Register.
package upload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

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
	Verified  string `msgpack:"verified,omitempty"`   // what was checked after the upload, e.g. "size,etag,sha256"
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

	// Redis keeps what a multipart upload has done (so a later attempt
	// resumes it), the progress and the per-destination limits. Required
	// for s3:// destinations; Register takes it from the worker's Config
	// when it is nil. (issue 19 contract: helper S1 owns this file)
	Redis redis.UniversalClient

	// S3 configures s3:// destinations.
	S3 S3Config

	// PartSize is the size of a multipart upload's parts (default 16 MiB;
	// at least 5 MiB; grown as needed to keep a known size within 10,000
	// parts). Objects up to MultipartThreshold (default PartSize) go in one
	// PUT. PartConcurrency parts of one task are sent at once (default 4).
	PartSize           int64
	MultipartThreshold int64
	PartConcurrency    int

	// RequestRate limits requests per destination (bucket on its endpoint,
	// or URL host) across the fleet; zero Rate means the default of 1000
	// per second. Bandwidth limits bytes per second per destination across
	// the fleet; zero means unlimited.
	RequestRate ratelimit.Limit
	Bandwidth   ratelimit.Bandwidth
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

// Handler runs uploads.
type Handler struct {
	roots []string
	hc    *http.Client
}

// New checks cfg and returns a Handler.
func New(cfg Config) (*Handler, error) {
	h := &Handler{hc: cfg.HTTPClient}
	if h.hc == nil {
		h.hc = &http.Client{Timeout: 5 * time.Minute}
	}
	for _, r := range cfg.Roots {
		abs, err := filepath.Abs(r)
		if err != nil {
			return nil, fmt.Errorf("upload: root %q: %w", r, err)
		}
		h.roots = append(h.roots, filepath.Clean(abs))
	}
	return h, nil
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

// Run performs one upload. Failures to reach the destination are retried
// (the task's attempts); bad arguments fail permanently.
func (h *Handler) Run(ctx context.Context, a Args) (Result, error) {
	src, err := h.inRoots(a.Src)
	if err != nil {
		return Result{}, err
	}
	f, err := os.Open(src)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Result{}, worker.Permanent(fmt.Errorf("source %s: %w", src, err))
		}
		return Result{}, err
	}
	defer f.Close()
	u, err := url.Parse(a.Dest)
	if err != nil {
		return Result{}, worker.Permanent(fmt.Errorf("destination %q: %w", a.Dest, err))
	}
	switch u.Scheme {
	case "", "file":
		p := a.Dest
		if u.Scheme == "file" {
			p = u.Path
		}
		return h.toFile(f, p)
	case "http", "https":
		return h.toHTTP(ctx, f, a.Dest)
	}
	return Result{}, worker.Permanent(fmt.Errorf("destination %q: scheme %q is not file, http or https", a.Dest, u.Scheme))
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

func (h *Handler) toHTTP(ctx context.Context, f *os.File, dest string) (Result, error) {
	st, err := f.Stat()
	if err != nil {
		return Result{}, err
	}
	sum := sha256.New()
	body := io.TeeReader(f, sum)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, dest, body)
	if err != nil {
		return Result{}, worker.Permanent(err)
	}
	req.ContentLength = st.Size()
	resp, err := h.hc.Do(req)
	if err != nil {
		return Result{}, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return Result{Bytes: st.Size(), SHA256: hex.EncodeToString(sum.Sum(nil)), Dest: dest}, nil
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
