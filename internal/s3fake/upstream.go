package s3fake

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Upstream mode: the same layer in front of a real S3-compatible server.
//
// When ASYNC_S3_UPSTREAM is set (a URL such as http://127.0.0.1:9000, with
// ASYNC_S3_ACCESS_KEY and ASYNC_S3_SECRET_KEY its credentials), New serves
// every request that gets past the fault hook by forwarding it, unchanged,
// to that server through a reverse proxy instead of to gofakes3, so the
// tests written against this package run against, say, MinIO. What differs:
//
//   - AccessKey and SecretKey are the upstream's; the upstream checks keys
//     and signatures itself (a bad one is its 403 InvalidAccessKeyId or
//     SignatureDoesNotMatch, counted in Stats.BadKey, as is its AccessDenied
//     to an unsigned request). The fault hook is asked about every request,
//     signed well or not.
//   - Requests go upstream byte for byte: SigV4 signs the Host header, the
//     path, the query and the aws-chunked framing, so the proxy keeps the
//     Host the client sent, never rewrites a path and leaves bodies as they
//     came. The layer only watches them: Stats, PartInfo.Received and OnBody
//     count the decoded payload bytes of aws-chunked bodies as before. The
//     fault hook sees the request as sent (an aws-chunked request keeps its
//     framing and Content-Length).
//   - Checksums are the upstream's to verify; PartInfo.Checksums and
//     ObjectInfo.Checksums are those it echoes or reports.
//   - Buckets of Options.Buckets are created when missing and never emptied:
//     the upstream is shared by every Server (and test binary) of a run, so
//     tests keep their keys apart and a run wants a fresh upstream (the CI
//     starts one with an empty data directory).
//   - Object and Info read from the upstream with minio-go.
//   - KMSKeyID is ASYNC_S3_KMS_KEY_ID: a KMS key the upstream knows.
//
// docs/uploads.md lists what a MinIO server does differently from
// gofakes3.

// Upstream environment variables.
const (
	EnvUpstream  = "ASYNC_S3_UPSTREAM"
	EnvAccessKey = "ASYNC_S3_ACCESS_KEY"
	EnvSecretKey = "ASYNC_S3_SECRET_KEY"
	// EnvKMSKeyID names a KMS key the upstream knows, for SSE-KMS
	// (MinIO's static key: the name in MINIO_KMS_SECRET_KEY=name:key).
	EnvKMSKeyID = "ASYNC_S3_KMS_KEY_ID"
)

// FakeKMSKeyID is the KMS key id KMSKeyID returns on gofakes3, which
// accepts any.
const FakeKMSKeyID = "fleet-kms-key"

// KMSKeyID returns a KMS key id the server accepts for SSE-KMS: on gofakes3
// FakeKMSKeyID (it keeps the header and encrypts nothing), upstream the one
// of ASYNC_S3_KMS_KEY_ID ("" when unset: the upstream may have no KMS).
func (s *Server) KMSKeyID() string {
	if s.up == nil {
		return FakeKMSKeyID
	}
	return os.Getenv(EnvKMSKeyID)
}

type upstream struct {
	url   *url.URL
	tr    *http.Transport
	proxy *httputil.ReverseProxy
	mc    *minio.Client
}

// UpstreamFromEnv returns the upstream URL of ASYNC_S3_UPSTREAM, "" when
// unset: New then runs gofakes3.
func UpstreamFromEnv() string { return os.Getenv(EnvUpstream) }

// Upstream returns the real server this one forwards to, "" when it serves
// from gofakes3.
func (s *Server) Upstream() string {
	if s.up == nil {
		return ""
	}
	return s.up.url.String()
}

func newUpstream(s *Server, raw string, buckets []string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("s3fake: %s=%q is not an http(s) URL", EnvUpstream, raw)
	}
	s.access, s.secret = os.Getenv(EnvAccessKey), os.Getenv(EnvSecretKey)
	if s.access == "" || s.secret == "" {
		return fmt.Errorf("s3fake: %s is set, %s and %s must be too", EnvUpstream, EnvAccessKey, EnvSecretKey)
	}
	up := &upstream{url: u, tr: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
		// A compressed reply would be decoded on the way: the client gets
		// what the upstream sent.
		DisableCompression: true,
	}}
	up.proxy = &httputil.ReverseProxy{
		// Only where to: the outgoing request keeps the client's Host
		// header (req.Host is not touched), path, query and body, all of
		// which the client's signature covers.
		Director: func(r *http.Request) {
			r.URL.Scheme = u.Scheme
			r.URL.Host = u.Host
		},
		Transport:      up.tr,
		ModifyResponse: s.countRefusal,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeError(w, r, http.StatusBadGateway, "BadGateway", "s3fake: upstream: "+err.Error())
		},
	}
	up.mc, err = minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(s.access, s.secret, ""),
		Secure:       u.Scheme == "https",
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
		Transport:    up.tr,
	})
	if err != nil {
		return fmt.Errorf("s3fake: upstream client: %w", err)
	}
	s.up = up
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, b := range buckets {
		err := up.mc.MakeBucket(ctx, b, minio.MakeBucketOptions{Region: "us-east-1"})
		if code := minio.ToErrorResponse(err).Code; err != nil && code != "BucketAlreadyOwnedByYou" {
			up.tr.CloseIdleConnections()
			return fmt.Errorf("s3fake: bucket %q upstream: %w", b, err)
		}
	}
	return nil
}

// countRefusal counts the upstream's refusals of a key or signature in
// Stats.BadKey (the layer's own check is off in upstream mode).
func (s *Server) countRefusal(resp *http.Response) error {
	if resp.StatusCode != http.StatusForbidden {
		return nil
	}
	var doc errorDoc
	var body []byte
	if resp.Request.Method != http.MethodHead {
		var err error
		body, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		if err != nil {
			return err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		_ = xml.Unmarshal(body, &doc)
	}
	switch doc.Code {
	case "InvalidAccessKeyId", "SignatureDoesNotMatch":
		s.badKey.Add(1)
	case "AccessDenied", "":
		if accessKeyID(resp.Request) == "" {
			s.badKey.Add(1)
		}
	}
	return nil
}

// serveUpstream is serve in upstream mode.
func (s *Server) serveUpstream(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	q := r.URL.Query()
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	uploadID := q.Get("uploadId")
	isPart := r.Method == http.MethodPut && uploadID != "" && q.Get("partNumber") != ""
	isPut := r.Method == http.MethodPut && uploadID == "" && key != "" && r.Header.Get("X-Amz-Copy-Source") == ""

	var body *watchReader
	if (r.Method == http.MethodPut || r.Method == http.MethodPost) && r.Body != nil && r.Body != http.NoBody {
		body = &watchReader{s: s, r: r, raw: r.Body}
		if strings.HasPrefix(r.Header.Get("X-Amz-Content-Sha256"), "STREAMING-") {
			body.chunks = &chunkCounter{}
		}
		r.Body = body
	}
	partNo, _ := strconv.Atoi(q.Get("partNumber"))
	if isPart && body != nil {
		defer func() { s.addReceived(uploadID, partNo, body.n) }()
	}
	if fp := s.fault.Load(); fp != nil {
		if f := (*fp)(r); f != nil {
			if !s.serveFault(w, r, f) {
				return
			}
		}
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		s.up.proxy.ServeHTTP(w, r)
		return
	}
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	s.up.proxy.ServeHTTP(rec, r)
	var n int64
	if body != nil {
		n = body.n
	}
	if rec.status == http.StatusOK {
		switch {
		case isPart:
			s.parts.Add(1)
			s.partBytes.Add(n)
			s.partStored(uploadID, partNo, n, rec.header.Get("ETag"), echoed(rec.header))
			if fp := s.onPart.Load(); fp != nil {
				(*fp)(PartEvent{Bucket: bucket, Key: key, UploadID: uploadID, Number: partNo, Bytes: n})
			}
		case isPut:
			s.puts.Add(1)
			s.objectBytes.Add(n)
			s.mu.Lock()
			s.sums[bucket+"/"+key] = echoed(rec.header)
			s.mu.Unlock()
		case r.Method == http.MethodPost && q.Has("uploads"):
			s.noteBegun(rec, bucket, key)
		case r.Method == http.MethodPost && uploadID != "":
			// A completion can fail after its 200 (the error document
			// then follows in the body).
			var doc errorDoc
			if xml.Unmarshal(rec.buf.Bytes(), &doc) != nil || doc.Code == "" {
				s.completed.Add(1)
				s.closeUpload(uploadID)
			}
		}
	}
	s.reply(w, r, rec, uploadID)
}

// echoed returns the x-amz-checksum-* values of a reply, by algorithm.
func echoed(h http.Header) map[string]string {
	var out map[string]string
	for k, v := range h {
		if alg, ok := strings.CutPrefix(strings.ToUpper(k), "X-AMZ-CHECKSUM-"); ok && alg != "TYPE" && len(v) > 0 {
			if out == nil {
				out = map[string]string{}
			}
			out[alg] = v[0]
		}
	}
	return out
}

// watchReader passes a request body on unchanged and counts its payload
// bytes (decoded, for an aws-chunked body).
type watchReader struct {
	s      *Server
	r      *http.Request
	raw    io.ReadCloser
	chunks *chunkCounter
	n      int64
}

func (b *watchReader) Read(p []byte) (int, error) {
	n, err := b.raw.Read(p)
	if n > 0 {
		d := int64(n)
		if b.chunks != nil {
			d = b.chunks.feed(p[:n])
		}
		if d > 0 {
			b.n += d
			b.s.bodyN.Add(d)
			if fp := b.s.onBody.Load(); fp != nil {
				(*fp)(b.r, int(d), time.Now())
			}
		}
	}
	return n, err
}

func (b *watchReader) Close() error { return b.raw.Close() }

// readPayload reads until at least n payload bytes were read or the body
// ends (a cut after CutAfter bytes).
func (b *watchReader) readPayload(n int64) {
	buf := make([]byte, 32<<10)
	for b.n < n {
		m := min(int64(len(buf)), n-b.n)
		if b.chunks != nil {
			m = int64(len(buf)) // framing between the payload bytes
		}
		if _, err := b.Read(buf[:m]); err != nil {
			return
		}
	}
}

// chunkCounter follows aws-chunked framing ("hex-size[;…]\r\n" data "\r\n"
// …, a last chunk of size 0, then trailers) fed in pieces, and tells how
// many payload bytes each piece held.
type chunkCounter struct {
	state int // 0 chunk header, 1 data, 2 CRLF after data, 3 after the last chunk
	line  []byte
	left  int64
}

func (c *chunkCounter) feed(p []byte) (n int64) {
	for len(p) > 0 {
		switch c.state {
		case 0:
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				if len(c.line) < 4096 {
					c.line = append(c.line, p...)
				}
				return n
			}
			c.line = append(c.line, p[:i]...)
			p = p[i+1:]
			sz, _, _ := strings.Cut(strings.TrimSpace(string(c.line)), ";")
			c.line = c.line[:0]
			size, err := strconv.ParseInt(sz, 16, 64)
			if err != nil || size <= 0 {
				c.state = 3 // the last chunk, or framing the upstream will refuse
				continue
			}
			c.left, c.state = size, 1
		case 1:
			k := min(int64(len(p)), c.left)
			n += k
			c.left -= k
			p = p[k:]
			if c.left == 0 {
				c.state = 2
			}
		case 2:
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				return n
			}
			p = p[i+1:]
			c.state = 0
		default:
			return n
		}
	}
	return n
}

// upstreamObject is Object in upstream mode.
func (s *Server) upstreamObject(bucket, key string) ([]byte, map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	obj, err := s.up.mc.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, nil, err
	}
	defer obj.Close()
	st, err := obj.Stat()
	if err != nil {
		return nil, nil, err
	}
	data, err := io.ReadAll(obj)
	if err != nil {
		return nil, nil, err
	}
	if int64(len(data)) != st.Size {
		return nil, nil, errors.New("s3fake: upstream object changed while read")
	}
	return data, map[string]string(st.UserMetadata), nil
}

// upstreamInfo is Info in upstream mode.
func (s *Server) upstreamInfo(bucket, key string) (ObjectInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := s.up.mc.StatObject(ctx, bucket, key, minio.StatObjectOptions{Checksum: true})
	if err != nil {
		return ObjectInfo{}, err
	}
	info := ObjectInfo{
		Size:         st.Size,
		ETag:         `"` + st.ETag + `"`,
		ContentType:  st.ContentType,
		StorageClass: st.Metadata.Get("X-Amz-Storage-Class"), // minio-go's StorageClass is for listings
		SSE:          st.Metadata.Get("X-Amz-Server-Side-Encryption"),
		Meta:         copyMap(st.UserMetadata),
		Headers:      map[string]string{},
	}
	for k, v := range st.Metadata {
		if len(v) > 0 {
			info.Headers[k] = v[0]
		}
	}
	for alg, v := range map[string]string{"CRC32": st.ChecksumCRC32, "CRC32C": st.ChecksumCRC32C,
		"SHA1": st.ChecksumSHA1, "SHA256": st.ChecksumSHA256, "CRC64NVME": st.ChecksumCRC64NVME} {
		if v != "" {
			if info.Checksums == nil {
				info.Checksums = map[string]string{}
			}
			info.Checksums[alg] = v
		}
	}
	return info, nil
}
