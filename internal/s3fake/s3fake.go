// Package s3fake runs an S3-compatible server in process, on a loopback
// port, for tests, benchmarks and the demo: gofakes3 with its in-memory
// backend, behind a layer that checks the access key, injects faults
// (SlowDown, 429, errors, held or cut requests) and counts what arrived.
package s3fake

import (
	"errors"
	"net/http"
	"time"
)

// Options configure a Server.
type Options struct {
	AccessKey string   // default "fleet-access-key"
	SecretKey string   // default "fleet-secret-key"
	Buckets   []string // created at start
	// Fault, if set, is asked about every request before it is served; a
	// non-nil answer is served instead (or after Delay, or the connection is
	// cut).
	Fault func(r *http.Request) *Fault
	// OnPart, if set, is called after a part upload was stored, before the
	// reply is written.
	OnPart func(p PartEvent)
}

// Fault is an injected answer.
type Fault struct {
	Status     int           // e.g. 503
	Code       string        // S3 error code, e.g. "SlowDown"
	RetryAfter time.Duration // sent as Retry-After (whole seconds, rounded up) when > 0
	Delay      time.Duration // wait this long first
	Cut        bool          // close the connection without a reply
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
}

// Server is a running fake.
type Server struct{}

// New starts a server on 127.0.0.1 on a free port.
func New(opts Options) (*Server, error) { return nil, errors.New("not yet") } // issue 19 contract (helper B)

// Endpoint is "127.0.0.1:port" (plain HTTP).
func (s *Server) Endpoint() string { return "" }

// URL is "http://127.0.0.1:port".
func (s *Server) URL() string { return "" }

// AccessKey and SecretKey are the credentials it accepts.
func (s *Server) AccessKey() string { return "" }
func (s *Server) SecretKey() string { return "" }

// Stats returns the counters.
func (s *Server) Stats() Stats { return Stats{} }

// OpenUploads lists the multipart uploads begun and neither completed nor
// aborted, as "bucket/key uploadID".
func (s *Server) OpenUploads() []string { return nil }

// Object returns a stored object's bytes and user metadata.
func (s *Server) Object(bucket, key string) (data []byte, meta map[string]string, err error) {
	return nil, nil, errors.New("not yet")
}

// Close stops the server.
func (s *Server) Close() error { return nil }
