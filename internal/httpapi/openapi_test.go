package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// loadOpenAPI loads and validates the embedded document.
func loadOpenAPI(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return doc
}

// TestOpenAPIValid: the document is valid OpenAPI 3.
func TestOpenAPIValid(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	if doc.OpenAPI != "3.0.3" || doc.Components.SecuritySchemes["bearer"] == nil {
		t.Fatalf("openapi %s, security schemes %v", doc.OpenAPI, doc.Components.SecuritySchemes)
	}
	op := doc.Paths.Value("/v1/openapi.json").Get
	if op == nil || op.Security == nil || len(*op.Security) != 0 {
		t.Fatal("GET /v1/openapi.json must need no token (security: [])")
	}
}

var pathParam = regexp.MustCompile(`\{[^}]*\}`)

// normal is a route's "METHOD /path" with its parameters unnamed.
func normal(method, path string) string {
	return method + " " + pathParam.ReplaceAllString(path, "{}")
}

// documented returns the document's operations as normal names, each
// with its path and operation.
func documented(doc *openapi3.T) map[string]docOp {
	out := map[string]docOp{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			out[normal(method, path)] = docOp{path: path, method: method, op: op}
		}
	}
	return out
}

type docOp struct {
	path, method string
	op           *openapi3.Operation
}

// sourcePatterns returns the patterns the package's source registers on a
// mux (every call of HandleFunc or Handle), read from the source itself:
// a pattern that is not a string literal fails the test, so none escapes.
func sourcePatterns(t *testing.T) []string {
	t.Helper()
	files, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	fset := gotoken.NewFileSet()
	for _, fi := range files {
		name := fi.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "HandleFunc" && sel.Sel.Name != "Handle" || len(call.Args) != 2 {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != gotoken.STRING {
				t.Errorf("%s: a route's pattern is not a string literal; this test reads the routes from the source", fset.Position(call.Pos()))
				return true
			}
			p, _ := strconv.Unquote(lit.Value)
			out = append(out, p)
			return true
		})
	}
	return out
}

// TestOpenAPIRoutes: every route the server registers is documented, and
// every documented operation is a route of the server.
func TestOpenAPIRoutes(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	env := testenv.Redis(t)
	s, err := newServer(Config{Client: testenv.Client(t, env), Inspector: inspect.New(env.RDB)})
	if err != nil {
		t.Fatal(err)
	}
	ops := documented(doc)
	routed := map[string]bool{}
	for _, p := range sourcePatterns(t) {
		if p == "/" {
			continue // the JSON 404 and 405 of every other path
		}
		method, path, ok := strings.Cut(p, " ")
		if !ok {
			t.Errorf("route %q has no method", p)
			continue
		}
		// The pattern is live: a request of its shape reaches it.
		req := httptest.NewRequest(method, pathParam.ReplaceAllString(path, "x"), nil)
		if _, got := s.mux.Handler(req); got != p {
			t.Errorf("%s %s reaches %q, not the route %q read in the source", req.Method, req.URL.Path, got, p)
		}
		n := normal(method, path)
		routed[n] = true
		if _, ok := ops[n]; !ok {
			t.Errorf("route %q is not in openapi.json", p)
		}
	}
	for n, o := range ops {
		if !routed[n] {
			t.Errorf("openapi.json has %s %s, which the server does not route", o.method, o.path)
		}
	}
	if len(routed) < 18 {
		t.Errorf("read %d routes from the source; want the contract's 18 or more", len(routed))
	}
}

// conformance validates every request and answer that passes through it
// against the document, and records which status of which operation it
// saw.
type conformance struct {
	t      *testing.T
	doc    *openapi3.T
	router routers.Router
	mu     sync.Mutex
	seen   map[string]map[int]bool // operationId -> status
}

func (c *conformance) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		reqBody = b
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	respBody, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	c.check(req, reqBody, resp, respBody)
	return resp, nil
}

func (c *conformance) check(req *http.Request, reqBody []byte, resp *http.Response, respBody []byte) {
	t := c.t
	what := fmt.Sprintf("%s %s (%d %s)", req.Method, req.URL.RequestURI(), resp.StatusCode, clip(string(respBody), 300))
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		t.Errorf("%s: no operation of openapi.json: %v", what, err)
		return
	}
	// The router matches the escaped path (so that "q%2Fk" stays one
	// segment) and gives its parameters escaped; the server reads them
	// unescaped, as the document describes them.
	for k, v := range params {
		if u, err := url.PathUnescape(v); err == nil {
			params[k] = u
		}
	}
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true, MultiError: true}
	r2 := req.Clone(context.Background())
	r2.Body = io.NopCloser(bytes.NewReader(reqBody))
	in := &openapi3filter.RequestValidationInput{Request: r2, PathParams: params, Route: route, Options: opts}
	if resp.StatusCode < 300 {
		// A refused request may well break the document's rules too:
		// only accepted ones are checked.
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			t.Errorf("%s: the request does not match openapi.json: %v", what, err)
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Body: io.NopCloser(bytes.NewReader(respBody)), Options: opts}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Errorf("%s: the answer does not match openapi.json: %v", what, err)
	}
	// Beyond what the schemas require: no field that the document does
	// not name.
	if rr := route.Operation.Responses.Status(resp.StatusCode); rr != nil && rr.Value != nil {
		if mt := rr.Value.Content.Get("application/json"); mt != nil && mt.Schema != nil {
			var v any
			if err := json.Unmarshal(respBody, &v); err == nil {
				for _, f := range undeclared(mt.Schema, v, "") {
					t.Errorf("%s: field %s is not in openapi.json", what, f)
				}
			}
		}
	}
	if resp.StatusCode == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("%s: 401 without WWW-Authenticate: Bearer", what)
	}
	if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
		t.Errorf("%s: 503 without Retry-After", what)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	id := route.Operation.OperationID
	if c.seen[id] == nil {
		c.seen[id] = map[int]bool{}
	}
	c.seen[id][resp.StatusCode] = true
}

// undeclared returns the paths of v's object fields that schema (with its
// allOf parts) does not declare, where it declares no additional ones.
func undeclared(ref *openapi3.SchemaRef, v any, at string) []string {
	if ref == nil || ref.Value == nil {
		return nil
	}
	props := map[string]*openapi3.SchemaRef{}
	var items *openapi3.SchemaRef
	open := false
	var collect func(s *openapi3.Schema)
	collect = func(s *openapi3.Schema) {
		for k, p := range s.Properties {
			props[k] = p
		}
		if s.Items != nil {
			items = s.Items
		}
		if s.AdditionalProperties.Has != nil && *s.AdditionalProperties.Has || s.AdditionalProperties.Schema != nil {
			open = true
		}
		for _, a := range s.AllOf {
			if a.Value != nil {
				collect(a.Value)
			}
		}
	}
	collect(ref.Value)
	if len(props) == 0 {
		open = true // any JSON (args, results) or any object (the document)
	}
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			p, ok := props[k]
			switch {
			case ok:
				out = append(out, undeclared(p, x, at+"."+k)...)
			case !open:
				out = append(out, at+"."+k)
			}
		}
	case []any:
		for i, x := range v {
			out = append(out, undeclared(items, x, fmt.Sprintf("%s[%d]", at, i))...)
		}
	}
	return out
}

// ndjsonDecoder decodes a JSON lines body into the array of its values.
func ndjsonDecoder(r io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
	var out []any
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var v any
		if err := json.Unmarshal(line, &v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, sc.Err()
}

func init() {
	openapi3filter.RegisterBodyDecoder("application/x-ndjson", ndjsonDecoder)
	openapi3filter.RegisterBodyDecoder("application/jsonl", ndjsonDecoder)
}

// oEcho returns its args; oBlock blocks until cancelled; oDeep returns a
// value nested deeper than the codec gate reads (its result cannot be
// shown as JSON).
type (
	oEcho  struct{ V any }
	oBlock struct{}
	oDeep  struct{}
)

func (oEcho) Kind() string  { return "o.echo" }
func (oBlock) Kind() string { return "o.block" }
func (oDeep) Kind() string  { return "o.deep" }

// oServer is one server of the round, and the client that checks what
// passes.
type oServer struct {
	t   *testing.T
	url string
	hc  *http.Client
}

type oReply struct {
	status int
	body   []byte
}

func (r oReply) get(t *testing.T, field string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("%s: %v", r.body, err)
	}
	s, _ := m[field].(string)
	return s
}

// call sends a request: body as is (with ctype, application/json when
// ""), header pairs after.
func (s *oServer) call(method, path, body, ctype string, header ...string) oReply {
	t := s.t
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		if ctype == "" {
			ctype = "application/json"
		}
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return oReply{status: resp.StatusCode, body: b}
}

// want is call, wanting status.
func (s *oServer) want(status int, method, path, body, ctype string, header ...string) oReply {
	s.t.Helper()
	r := s.call(method, path, body, ctype, header...)
	if r.status != status {
		s.t.Errorf("%s %s: status %d, want %d: %s", method, path, r.status, status, r.body)
	}
	return r
}

// TestOpenAPIConformance drives every operation of the document to every
// status it documents, against live servers (one without tokens, one with,
// one whose Redis is gone) and a worker, and validates each request and
// answer against the document (kin-openapi: parameters, bodies, schemas,
// statuses), and that answers carry no field the document does not name.
func TestOpenAPIConformance(t *testing.T) {
	doc := loadOpenAPI(t)
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	conf := &conformance{t: t, doc: doc, router: router, seen: map[string]map[int]bool{}}
	hc := &http.Client{Transport: conf}

	env := testenv.Redis(t)
	c := testenv.Client(t, env)
	q := testenv.Queue(t)
	serve := func(cfg Config) *oServer {
		cfg.Client, cfg.Inspector = c, inspect.New(env.RDB)
		cfg.MaxBatchTasks, cfg.MaxPayloadBytes = 3, 4096
		h, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return &oServer{t: t, url: srv.URL, hc: hc}
	}
	open := serve(Config{})
	auth := serve(Config{Tokens: []Token{{Name: "all", Secret: "s-all"}}})
	// A server whose Redis is gone.
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: 1})
	t.Cleanup(func() { _ = rdb.Close() })
	dc, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dc.Close() })
	dh, err := New(Config{Client: dc, Inspector: inspect.New(rdb)})
	if err != nil {
		t.Fatal(err)
	}
	dsrv := httptest.NewServer(dh)
	t.Cleanup(dsrv.Close)
	down := &oServer{t: t, url: dsrv.URL, hc: hc}
	m.Close()

	testenv.StartWorker(t, env.RDB, q, &worker.Config{Concurrency: 4}, func(w *worker.Worker) {
		worker.Handle(w, func(_ context.Context, a oEcho) (any, error) { return a.V, nil })
		worker.Handle(w, func(ctx context.Context, _ oBlock) (int, error) { <-ctx.Done(); return 0, context.Cause(ctx) })
		handleReporting(w, nil) // reports until cancelled
		worker.Handle(w, func(context.Context, oDeep) (any, error) {
			var v any = 1
			for range 40 {
				v = []any{v}
			}
			return v, nil
		})
	}, true)

	esc := url.PathEscape
	task := func(kind string, extra string) string { return `{"kind":"` + kind + `"` + extra + `}` }
	echo := task("o.echo", `,"args":{"V":{"n":1,"s":"x","b":{"$bytes":"AQI="},"l":[1.5,null,true]}},"max_attempts":2,"timeout":"10s","retention":"1h","meta":{"k":"v"}`)
	tp := []string{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate", "k=v"}
	bearer := []string{"Authorization", "Bearer s-all"}
	foreign := []string{"Host", "example.com"}

	// Tasks: one, by id (twice), a batch of each body type.
	id := open.want(201, "POST", "/v1/queues/"+q+"/tasks", echo, "", tp...).get(t, "id")
	open.want(201, "POST", "/v1/queues/"+q+"/tasks", task("o.echo", `,"id":"t-dup","partition_key":"p:1/a","deadline":"1h"`), "")
	open.want(200, "POST", "/v1/queues/"+q+"/tasks", task("o.echo", `,"id":"t-dup","partition_key":"p:1/a","deadline":"1h"`), "")
	open.want(201, "POST", "/v1/queues/"+q+"/tasks/batch", "["+task("o.echo", "")+","+task("o.echo", `,"queue":"`+q+`","rate_key":"r1"`)+"]", "")
	lines := task("o.echo", `,"id":"b1"`) + "\n\n" + task("o.echo", `,"id":"b2","process_at":"2030-01-02T15:04:05Z"`) + "\n"
	open.want(201, "POST", "/v1/queues/"+q+"/tasks/batch", lines, "application/x-ndjson")
	open.want(200, "POST", "/v1/queues/"+q+"/tasks/batch", lines, "application/jsonl")
	later := open.want(201, "POST", "/v1/queues/"+q+"/tasks", task("o.echo", `,"delay":"1h"`), "").get(t, "id")
	deep := open.want(201, "POST", "/v1/queues/"+q+"/tasks", task("o.deep", ""), "").get(t, "id")
	qn, key, _ := strings.Cut(id, "/")
	lq, lkey, _ := strings.Cut(later, "/")

	// Reads of a task both ways, its outcome (ended, and not), a cancel.
	open.want(200, "GET", "/v1/tasks/"+esc(id)+"/outcome?wait=20s", "", "")
	open.want(200, "GET", "/v1/tasks/"+qn+"/"+key+"/outcome?wait=1s", "", "")
	open.want(200, "GET", "/v1/tasks/"+esc(id), "", "")
	open.want(200, "GET", "/v1/tasks/"+qn+"/"+key, "", "")
	open.want(200, "GET", "/v1/tasks/"+esc(later)+"/outcome?wait=10ms", "", "")
	open.want(200, "GET", "/v1/tasks/"+esc(later), "", "")
	open.want(200, "POST", "/v1/tasks/"+esc(later)+"/cancel", "", "")
	open.want(200, "POST", "/v1/tasks/"+lq+"/"+lkey+"/cancel", "", "")
	open.want(500, "GET", "/v1/tasks/"+esc(deep)+"/outcome?wait=20s", "", "")
	dq, dkey, _ := strings.Cut(deep, "/")
	open.want(500, "GET", "/v1/tasks/"+dq+"/"+dkey+"/outcome", "", "")

	// Groups: a ForkJoin with a join (and again: a duplicate), an
	// InvokeAll, their reads both ways, a cancel, and an unreadable
	// member's result.
	fj := `{"id":"fj","queue":"` + q + `","tasks":[` + echo + `,` + task("o.echo", `,"queue":"`+q+`"`) + `],"join":` + task("o.echo", "") + `,"fail_fast":true,"retention":"1h"}`
	gid := open.want(201, "POST", "/v1/groups", fj, "", tp...).get(t, "id")
	open.want(200, "POST", "/v1/groups", fj, "")
	open.want(201, "POST", "/v1/groups", `{"tasks":[`+task("o.echo", `,"queue":"`+q+`"`)+`],"concurrency":1}`, "")
	open.want(200, "GET", "/v1/groups/"+esc(gid)+"/outcome?wait=20s", "", "")
	open.want(200, "GET", "/v1/groups/"+q+"/fj/outcome", "", "")
	open.want(200, "GET", "/v1/groups/"+esc(gid), "", "")
	open.want(200, "GET", "/v1/groups/group:"+q+"/fj", "", "")
	bid := open.want(201, "POST", "/v1/groups", `{"queue":"`+q+`","tasks":[`+task("o.block", "")+`]}`, "").get(t, "id")
	open.want(200, "GET", "/v1/groups/"+esc(bid)+"/outcome?wait=10ms", "", "")
	open.want(200, "POST", "/v1/groups/"+esc(bid)+"/cancel", "", "")
	_, bown, _ := strings.Cut(strings.TrimPrefix(bid, "group:"), "/")
	open.want(200, "POST", "/v1/groups/"+q+"/"+bown+"/cancel", "", "")
	did := open.want(201, "POST", "/v1/groups", `{"id":"gdeep","queue":"`+q+`","tasks":[`+task("o.deep", "")+`]}`, "").get(t, "id")
	open.want(500, "GET", "/v1/groups/"+esc(did)+"/outcome?wait=20s", "", "")
	open.want(500, "GET", "/v1/groups/"+q+"/gdeep/outcome", "", "")

	// A task and a group whose handlers report progress, read once the
	// reports are in.
	pid := open.want(201, "POST", "/v1/queues/"+q+"/tasks", task("p.upload", `,"args":{"done":5,"total":10}`), "").get(t, "id")
	pgid := open.want(201, "POST", "/v1/groups", `{"queue":"`+q+`","tasks":[`+task("p.upload", `,"args":{"done":1,"total":0}`)+`]}`, "").get(t, "id")
	in := inspect.New(env.RDB)
	testenv.Eventually(t, 10*time.Second, "the reports", func() bool {
		ti, err := in.Task(context.Background(), pid)
		if err != nil {
			t.Fatal(err)
		}
		gd, err := in.GroupMembers(context.Background(), pgid)
		if err != nil {
			t.Fatal(err)
		}
		return ti.Progress != nil && gd.WorkDone > 0
	})
	open.want(200, "GET", "/v1/tasks/"+esc(pid), "", "")
	open.want(200, "GET", "/v1/groups/"+esc(pgid), "", "")

	// Queues, and the document.
	open.want(200, "GET", "/v1/queues", "", "")
	auth.want(200, "GET", "/v1/queues/"+q, "", "", bearer...)
	open.want(200, "GET", "/v1/openapi.json", "", "")
	auth.want(200, "GET", "/v1/openapi.json", "", "")

	// Every operation, refused: each path of the document with its
	// parameters filled, a body that passes where one is needed.
	fill := map[string]string{
		"/v1/queues/{queue}/tasks":        "/v1/queues/" + q + "/tasks",
		"/v1/queues/{queue}/tasks/batch":  "/v1/queues/" + q + "/tasks/batch",
		"/v1/tasks/{id}":                  "/v1/tasks/" + esc(q+"/nope"),
		"/v1/tasks/{queue}/{key}":         "/v1/tasks/" + q + "/nope",
		"/v1/tasks/{id}/outcome":          "/v1/tasks/" + esc(q+"/nope") + "/outcome",
		"/v1/tasks/{queue}/{key}/outcome": "/v1/tasks/" + q + "/nope/outcome",
		"/v1/tasks/{id}/cancel":           "/v1/tasks/" + esc(q+"/nope") + "/cancel",
		"/v1/tasks/{queue}/{key}/cancel":  "/v1/tasks/" + q + "/nope/cancel",
		"/v1/groups":                      "/v1/groups",
		"/v1/groups/{id}":                 "/v1/groups/" + esc("group:"+q+"/nope"),
		"/v1/groups/{home}/{id}":          "/v1/groups/" + q + "/nope",
		"/v1/groups/{id}/outcome":         "/v1/groups/" + esc("group:"+q+"/nope") + "/outcome",
		"/v1/groups/{home}/{id}/outcome":  "/v1/groups/" + q + "/nope/outcome",
		"/v1/groups/{id}/cancel":          "/v1/groups/" + esc("group:"+q+"/nope") + "/cancel",
		"/v1/groups/{home}/{id}/cancel":   "/v1/groups/" + q + "/nope/cancel",
		"/v1/queues":                      "/v1/queues",
		"/v1/queues/{queue}":              "/v1/queues/nope-" + q,
		"/v1/openapi.json":                "/v1/openapi.json",
	}
	okBody := map[string]string{
		"/v1/queues/{queue}/tasks":       echo,
		"/v1/queues/{queue}/tasks/batch": "[" + echo + "]",
		"/v1/groups":                     `{"queue":"` + q + `","tasks":[` + echo + `]}`,
	}
	// Bad requests (400) and too large ones (413), per path.
	bad := map[string][2]string{ // path, body
		"/v1/queues/{queue}/tasks":        {"", `{"kind":"o.echo","bogus":1}`},
		"/v1/queues/{queue}/tasks/batch":  {"", `[]`},
		"/v1/tasks/{id}":                  {"/v1/tasks/a%2Fb%2Fc", ""},
		"/v1/tasks/{queue}/{key}":         {"/v1/tasks/a%20b/k", ""},
		"/v1/tasks/{id}/outcome":          {"/v1/tasks/" + esc(id) + "/outcome?wait=soon", ""},
		"/v1/tasks/{queue}/{key}/outcome": {"/v1/tasks/" + qn + "/" + key + "/outcome?wait=-1s", ""},
		"/v1/tasks/{id}/cancel":           {"/v1/tasks/a%2Fb%2Fc/cancel", ""},
		"/v1/tasks/{queue}/{key}/cancel":  {"/v1/tasks/a%20b/k/cancel", ""},
		"/v1/groups":                      {"", `{"queue":"` + q + `","tasks":[]}`},
		"/v1/groups/{id}":                 {"/v1/groups/a%2Fb%2Fc", ""},
		"/v1/groups/{home}/{id}":          {"/v1/groups/a%20b/g", ""},
		"/v1/groups/{id}/outcome":         {"/v1/groups/" + esc(gid) + "/outcome?wait=soon", ""},
		"/v1/groups/{home}/{id}/outcome":  {"/v1/groups/" + q + "/fj/outcome?wait=soon", ""},
		"/v1/groups/{id}/cancel":          {"/v1/groups/a%2Fb%2Fc/cancel", ""},
		"/v1/groups/{home}/{id}/cancel":   {"/v1/groups/a%20b/g/cancel", ""},
		"/v1/queues/{queue}":              {"/v1/queues/a%20b", ""},
	}
	big := map[string]string{
		"/v1/queues/{queue}/tasks":       task("o.echo", `,"args":"`+strings.Repeat("x", 5000)+`"`),
		"/v1/queues/{queue}/tasks/batch": "[" + strings.Repeat(echo+",", 3) + echo + "]",
		"/v1/groups":                     `{"queue":"` + q + `","tasks":[` + strings.Repeat(echo+",", 3) + echo + `]}`,
	}
	paths := slices.Sorted(func(yield func(string) bool) {
		for p := range doc.Paths.Map() {
			if !yield(p) {
				return
			}
		}
	})
	for _, p := range paths {
		item := doc.Paths.Value(p)
		for method, op := range item.Operations() {
			target, body := fill[p], okBody[p]
			if target == "" {
				t.Errorf("no request for %s %s: add it to the round", method, p)
				continue
			}
			for code := range op.Responses.Map() {
				switch code {
				case "400":
					b := bad[p]
					tp, bb := b[0], b[1]
					if tp == "" {
						tp = target
					}
					open.want(400, method, tp, bb, "")
				case "401":
					auth.want(401, method, target, body, "")
				case "403":
					open.want(403, method, target, body, "", foreign...)
				case "404":
					open.want(404, method, target, body, "")
				case "413":
					open.want(413, method, target, big[p], "")
				case "415":
					open.want(415, method, target, body, "text/plain")
				case "503":
					down.want(503, method, target, body, "")
				}
			}
		}
	}

	// Every operation was seen with every status it documents.
	for _, o := range documented(doc) {
		for code := range o.op.Responses.Map() {
			n, err := strconv.Atoi(code)
			if err != nil {
				continue // default
			}
			if !conf.seen[o.op.OperationID][n] {
				t.Errorf("%s (%s %s): status %d is documented but was not seen", o.op.OperationID, o.method, o.path, n)
			}
		}
	}
	// And no status was seen that the document does not list (the
	// validation says so too; this names them together).
	for id, codes := range conf.seen {
		var got []int
		for c := range codes {
			got = append(got, c)
		}
		sort.Ints(got)
		t.Logf("%s: %v", id, got)
	}
}

// TestOpenAPIMethods: a method a documented path does not serve is 405
// with an Allow header naming at least the path's documented methods, and
// an unknown path is 404, both with the Error body.
func TestOpenAPIMethods(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	env := testenv.Redis(t)
	h, err := New(Config{Client: testenv.Client(t, env), Inspector: inspect.New(env.RDB)})
	if err != nil {
		t.Fatal(err)
	}
	errSchema := doc.Components.Schemas["Error"].Value
	check := func(what string, rec *httptest.ResponseRecorder, status int) {
		t.Helper()
		if rec.Code != status {
			t.Errorf("%s: status %d, want %d: %s", what, rec.Code, status, rec.Body)
			return
		}
		var v any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Errorf("%s: %v", what, err)
			return
		}
		if err := errSchema.VisitJSON(v); err != nil {
			t.Errorf("%s: the body is not an Error: %v", what, err)
		}
	}
	for path, item := range doc.Paths.Map() {
		concrete := strings.NewReplacer("{queue}", "q", "{key}", "k", "{home}", "q", "{id}", "group:q%2Fg").Replace(path)
		if strings.HasPrefix(path, "/v1/tasks/{id}") {
			concrete = strings.Replace(path, "{id}", "q%2Fk", 1)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, loopbackRequest("DELETE", concrete))
		check("DELETE "+concrete, rec, http.StatusMethodNotAllowed)
		allow := strings.Split(rec.Header().Get("Allow"), ", ")
		for m := range item.Operations() {
			if !slices.Contains(allow, m) {
				t.Errorf("DELETE %s: Allow %q lacks %s", concrete, rec.Header().Get("Allow"), m)
			}
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, loopbackRequest("GET", "/v1/nope"))
	check("GET /v1/nope", rec, http.StatusNotFound)
}

// loopbackRequest is a request to 127.0.0.1 (a server without tokens
// answers only loopback hosts).
func loopbackRequest(method, target string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	r.Host = "127.0.0.1"
	return r
}
