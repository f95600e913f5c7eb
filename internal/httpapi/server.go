package httpapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/engine"
	"github.com/taskfleet/async/internal/loopback"
)

// Defaults of Config.
const (
	defaultMaxBodyBytes  = 4 << 20
	defaultMaxBatchBytes = 64 << 20
	defaultMaxBatchTasks = 10000
	defaultMaxWait       = 5 * time.Minute
	defaultBodyTimeout   = 60 * time.Second
)

// server is the handler New returns. Its methods spec, authorize,
// readBody, decode and taskRef are what every route shares (groups.go
// builds on them).
type server struct {
	cfg       Config // defaults applied
	client    *client.Client
	inspector *inspect.Inspector
	log       *slog.Logger
	tokens    []token // empty: no authentication
	mux       *http.ServeMux
	origin    *http.CrossOriginProtection
}

// extraRoutes are registered by New after the routes of this file's
// package part: groups.go appends its (*server).routeGroups in an init.
var extraRoutes []func(*server, *http.ServeMux)

func (c *Config) withDefaults() Config {
	out := *c
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if out.MaxBodyBytes == 0 {
		out.MaxBodyBytes = defaultMaxBodyBytes
	}
	if out.MaxBatchBytes == 0 {
		out.MaxBatchBytes = defaultMaxBatchBytes
	}
	if out.MaxBatchTasks == 0 {
		out.MaxBatchTasks = defaultMaxBatchTasks
	}
	if out.MaxWait == 0 {
		out.MaxWait = defaultMaxWait
	}
	if out.BodyTimeout == 0 {
		out.BodyTimeout = defaultBodyTimeout
	}
	if out.Now == nil {
		out.Now = time.Now
	}
	if out.MaxPayloadBytes == 0 {
		out.MaxPayloadBytes = engine.DefaultMaxPayload
	}
	return out
}

func newServer(cfg Config) (*server, error) {
	c := cfg.withDefaults()
	switch {
	case c.Client == nil:
		return nil, errors.New("httpapi: Config.Client is nil")
	case c.Inspector == nil:
		return nil, errors.New("httpapi: Config.Inspector is nil")
	case c.MaxBodyBytes < 0, c.MaxBatchBytes < 0, c.MaxBatchTasks < 0, c.MaxWait < 0, c.MaxPayloadBytes < 0, c.BodyTimeout < 0:
		return nil, errors.New("httpapi: Config.MaxBodyBytes, MaxBatchBytes, MaxBatchTasks, MaxWait, MaxPayloadBytes and BodyTimeout must not be negative")
	}
	toks, err := newTokens(c.Tokens)
	if err != nil {
		return nil, err
	}
	s := &server{cfg: c, client: c.Client, inspector: c.Inspector, log: c.Logger, tokens: toks, origin: http.NewCrossOriginProtection()}
	mux := http.NewServeMux()
	s.routes(mux)
	for _, f := range extraRoutes {
		f(s, mux)
	}
	// Every path no route takes: a JSON 404, or 405 with Allow.
	mux.HandleFunc("/", s.noRoute)
	s.mux = mux
	return s, nil
}

// routes registers the routes of tasks, batches and queues, and the
// OpenAPI document.
func (s *server) routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/queues/{queue}/tasks", s.enqueue)
	mux.HandleFunc("POST /v1/queues/{queue}/tasks/batch", s.enqueueBatch)
	mux.HandleFunc("GET /v1/queues", s.queues)
	mux.HandleFunc("GET /v1/queues/{queue}", s.queue)
	// A task id has one slash: /v1/tasks/{queue}/{key}, or escaped as one
	// segment (/v1/tasks/uploads%2Fa1). A task whose key is "outcome" or
	// "cancel" is read as /v1/tasks/{queue}/outcome, which the escaped
	// routes below tell apart (see taskRef).
	mux.HandleFunc("GET /v1/tasks/{id}", s.getTask)
	mux.HandleFunc("GET /v1/tasks/{queue}/{key}", s.getTask)
	mux.HandleFunc("GET /v1/tasks/{id}/outcome", s.outcome)
	mux.HandleFunc("GET /v1/tasks/{queue}/{key}/outcome", s.outcome)
	mux.HandleFunc("POST /v1/tasks/{id}/cancel", s.cancel)
	mux.HandleFunc("POST /v1/tasks/{queue}/{key}/cancel", s.cancel)
	mux.HandleFunc("GET /v1/openapi.json", s.openAPI)
}

// ServeHTTP checks what every request must pass, then routes it.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if len(s.tokens) == 0 && !loopback.Host(r.Host) {
		// Without tokens only a loopback host is served: a page of another
		// site whose name was made to resolve to 127.0.0.1 (DNS
		// rebinding) could otherwise use the API as its own.
		s.refuse(w, r, &apiError{Status: http.StatusForbidden, Msg: "the API has no token configured, so it answers only requests to localhost or a loopback address"})
		return
	}
	if err := s.origin.Check(r); err != nil {
		s.refuse(w, r, &apiError{Status: http.StatusForbidden, Msg: "cross-origin browser requests that write are refused"})
		return
	}
	if p := r.URL.EscapedPath(); !cleanPath(p) {
		// ServeMux would answer with a redirect to the cleaned path, in
		// HTML, which a client following it may send elsewhere than meant.
		s.refuse(w, r, &apiError{Status: http.StatusBadRequest, Msg: fmt.Sprintf("path %s has an empty, \".\" or \"..\" segment; send it clean (escape such a name, or better, choose another)", quote(p)), Field: "path"})
		return
	}
	s.mux.ServeHTTP(w, r)
}

// noRoute answers a request no route takes: 405 with Allow when the path
// has routes for other methods, else 404.
func (s *server) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		probe := r.WithContext(r.Context())
		probe.Method = m
		if _, p := s.mux.Handler(probe); p != "/" && p != "" {
			allow = append(allow, m)
			if m == http.MethodGet {
				allow = append(allow, http.MethodHead)
			}
		}
	}
	if len(allow) == 0 {
		s.refuse(w, r, &apiError{Status: http.StatusNotFound, Msg: fmt.Sprintf("no route %s %s", r.Method, clip(r.URL.EscapedPath(), 100))})
		return
	}
	w.Header().Set("Allow", strings.Join(allow, ", "))
	s.refuse(w, r, &apiError{Status: http.StatusMethodNotAllowed, Msg: fmt.Sprintf("method %s is not allowed here; use %s", clip(r.Method, 20), strings.Join(allow, " or "))})
}

// openAPI serves the OpenAPI document (no token needed).
func (s *server) openAPI(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(OpenAPI)
}

// refuse writes e, and logs it at debug level (never a header, so never a
// secret). noAnswer writes nothing.
func (s *server) refuse(w http.ResponseWriter, r *http.Request, e *apiError) {
	if e == noAnswer {
		return
	}
	if s.log.Enabled(r.Context(), slog.LevelDebug) {
		s.log.Debug("httpapi: request refused", "method", clip(r.Method, 20), "path", clip(r.URL.EscapedPath(), 200), "status", e.Status, "field", e.Field, "error", e.Msg)
	}
	writeError(w, e)
}

// cleanPath reports whether p (an escaped URL path) is absolute and
// clean, as ServeMux wants it: no empty, "." or ".." segment, a trailing
// slash aside.
func cleanPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c == p
}
