package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/testenv"
)

// errCase is a request the API refuses: its status and the field its
// error names.
type errCase struct {
	name   string
	method string
	path   string // "{q}" is the test's queue
	body   any
	header []string
	status int
	field  string
	says   string // a part of the error, when set
}

// check sends c and asserts its status, field, and JSON error body.
func (c errCase) check(t *testing.T, a *api) *reply {
	t.Helper()
	r := a.do(c.method, strings.ReplaceAll(c.path, "{q}", a.queue), c.body, c.header...)
	if r.Status != c.status {
		t.Fatalf("status %d, want %d; body %s", r.Status, c.status, r.Body)
	}
	if r.JSON == nil || r.msg() == "" {
		t.Fatalf("no JSON error body: %q (%s)", r.Body, r.Header.Get("Content-Type"))
	}
	if r.field() != c.field {
		t.Fatalf("field %q, want %q; error %q", r.field(), c.field, r.msg())
	}
	if !strings.Contains(r.msg(), c.says) {
		t.Fatalf("error %q; want it to say %q", r.msg(), c.says)
	}
	if len(r.Body) > 600 {
		t.Fatalf("error body of %d bytes: %.200s...", len(r.Body), r.Body)
	}
	return r
}

func meta(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":"v"`, i)
	}
	return "{" + b.String() + "}"
}

// Every 4xx case of the contract that needs no token, each with its
// status and the field it names.
func TestRefusals(t *testing.T) {
	a := newAPI(t, testenv.Redis(t), Config{MaxBodyBytes: 2048, MaxBatchBytes: 8192, MaxBatchTasks: 3, MaxPayloadBytes: 100})
	const task, batch = "/v1/queues/{q}/tasks", "/v1/queues/{q}/tasks/batch"
	big := strings.Repeat("x", 200)
	a.do("POST", strings.ReplaceAll(task, "{q}", a.queue), `{"kind":"k","id":"there"}`).want(t, http.StatusCreated)
	for _, c := range []errCase{
		// 400: the body's JSON.
		{name: "malformed JSON", body: `{"kind":`, status: 400, field: ""},
		{name: "malformed JSON value", body: `{"kind": x}`, status: 400, field: ""},
		{name: "empty body", body: ``, status: 400, field: "", says: "empty"},
		{name: "not an object", body: `[{"kind":"k"}]`, status: 400, field: ""},
		{name: "data after the object", body: `{"kind":"k"} {}`, status: 400, field: ""},
		{name: "unknown field", body: `{"kind":"k","colour":"red"}`, status: 400, field: "colour"},
		{name: "wrong type", body: `{"kind":"k","max_attempts":"5"}`, status: 400, field: "max_attempts"},
		{name: "wrong type in meta", body: `{"kind":"k","meta":{"a":1}}`, status: 400, field: "meta"},
		// 400: the task's fields.
		{name: "missing kind", body: `{}`, status: 400, field: "kind"},
		{name: "bad kind", body: `{"kind":"a b"}`, status: 400, field: "kind"},
		{name: "bad queue", path: "/v1/queues/a%20b/tasks", body: `{"kind":"k"}`, status: 400, field: "queue"},
		{name: "another queue", body: `{"kind":"k","queue":"other"}`, status: 400, field: "queue"},
		{name: "bad id", body: `{"kind":"k","id":"a/b"}`, status: 400, field: "id"},
		{name: "id of a generated shape", body: `{"kind":"k","id":"123-4"}`, status: 400, field: "id"},
		{name: "id of a batch", body: `{"kind":"k","id":"bt-1"}`, status: 400, field: "id"},
		{name: "bad rate_key", body: `{"kind":"k","rate_key":"a b"}`, status: 400, field: "rate_key"},
		{name: "bad partition_key", body: `{"kind":"k","partition_key":"a b"}`, status: 400, field: "partition_key"},
		{name: "partition_key with delay", body: `{"kind":"k","partition_key":"p","delay":"1s"}`, status: 400, field: "partition_key"},
		{name: "bad delay", body: `{"kind":"k","delay":"soon"}`, status: 400, field: "delay"},
		{name: "negative delay", body: `{"kind":"k","delay":"-1s"}`, status: 400, field: "delay"},
		{name: "bad process_at", body: `{"kind":"k","process_at":"tomorrow"}`, status: 400, field: "process_at"},
		{name: "delay with process_at", body: `{"kind":"k","delay":"1s","process_at":"2030-01-01T00:00:00Z"}`, status: 400, field: "process_at"},
		{name: "bad timeout", body: `{"kind":"k","timeout":"x"}`, status: 400, field: "timeout"},
		{name: "timeout under 1ms", body: `{"kind":"k","timeout":"1ns"}`, status: 400, field: "timeout"},
		{name: "bad retention", body: `{"kind":"k","retention":"0s"}`, status: 400, field: "retention"},
		{name: "bad deadline", body: `{"kind":"k","deadline":"x"}`, status: 400, field: "deadline"},
		{name: "negative deadline", body: `{"kind":"k","deadline":"-5s"}`, status: 400, field: "deadline"},
		{name: "negative max_attempts", body: `{"kind":"k","max_attempts":-1}`, status: 400, field: "max_attempts"},
		{name: "meta too many", body: `{"kind":"k","meta":` + meta(65) + `}`, status: 400, field: "meta"},
		{name: "meta empty key", body: `{"kind":"k","meta":{"":"v"}}`, status: 400, field: "meta"},
		{name: "args bad marker", body: `{"kind":"k","args":{"a":[1,{"$bytes":"!!"}]}}`, status: 400, field: "args.a[1]"},
		{name: "args key twice", body: `{"kind":"k","args":{"x":1,"x":2}}`, status: 400, field: "args.x"},
		{name: "args number too large", body: `{"kind":"k","args":[1e999]}`, status: 400, field: "args[0]"},
		// 400: batches.
		{name: "batch empty", path: batch, body: `[]`, status: 400, field: "tasks"},
		{name: "batch empty lines", path: batch, body: "\n\n", status: 400, field: "tasks"},
		{name: "batch task field", path: batch, body: `[{"kind":"k"},{"kind":""}]`, status: 400, field: "tasks[1].kind"},
		{name: "batch task unknown field", path: batch, body: `[{"kind":"k","nope":1}]`, status: 400, field: "tasks[0].nope"},
		{name: "batch task type", path: batch, body: `[{"kind":"k"},{"kind":"k","meta":{"a":[]}}]`, status: 400, field: "tasks[1].meta"},
		{name: "batch task malformed", path: batch, body: `[{"kind":"k"},{"kind":]`, status: 400, field: "tasks[1]"},
		{name: "batch task not an object", path: batch, body: `[{"kind":"k"},3]`, status: 400, field: "tasks[1]"},
		{name: "batch another queue", path: batch, body: `[{"kind":"k","queue":"other"}]`, status: 400, field: "tasks[0].queue"},
		{name: "batch args", path: batch, body: `[{"kind":"k"},{"kind":"k","args":{"$time":"x"}}]`, status: 400, field: "tasks[1].args"},
		{name: "batch array not closed", path: batch, body: `[{"kind":"k"}`, status: 400, field: "", says: "ends early"},
		{name: "batch array trailing comma", path: batch, body: `[{"kind":"k"},]`, status: 400, field: "tasks[1]"},
		{name: "batch data after the array", path: batch, body: `[{"kind":"k"}] [{"kind":"k"}]`, status: 400, field: ""},
		{name: "batch lines task field", path: batch, body: "{\"kind\":\"k\"}\n{\"kind\":\"k\",\"delay\":\"x\"}\n", header: []string{"Content-Type", "application/x-ndjson"}, status: 400, field: "tasks[1].delay"},
		{name: "batch lines malformed", path: batch, body: "{\"kind\":\"k\"}\n{\"kind\n", status: 400, field: "tasks[1]"},
		// 400: parameters.
		{name: "bad wait", method: "GET", path: "/v1/tasks/{q}/there/outcome?wait=soon", status: 400, field: "wait"},
		{name: "negative wait", method: "GET", path: "/v1/tasks/{q}/there/outcome?wait=-1s", status: 400, field: "wait"},
		{name: "task id without queue", method: "GET", path: "/v1/tasks/there", status: 400, field: "id"},
		{name: "task id with two slashes", method: "GET", path: "/v1/tasks/a%2Fb%2Fc", status: 400, field: "id"},
		{name: "bad task key", method: "GET", path: "/v1/tasks/{q}/a%20b", status: 400, field: "id"},
		{name: "bad queue name", method: "GET", path: "/v1/queues/a%20b", status: 400, field: "queue"},
		// 404.
		{name: "unknown task", method: "GET", path: "/v1/tasks/{q}/none", status: 404},
		{name: "unknown task escaped", method: "GET", path: "/v1/tasks/{q}%2Fnone", status: 404},
		{name: "unknown task outcome", method: "GET", path: "/v1/tasks/{q}/none/outcome", status: 404},
		{name: "unknown task cancel", method: "POST", path: "/v1/tasks/{q}/none/cancel", status: 404},
		{name: "unknown queue", method: "GET", path: "/v1/queues/{q}-none", status: 404},
		{name: "unknown route", method: "GET", path: "/v1/nope", status: 404},
		{name: "root", method: "GET", path: "/", status: 404},
		// 413.
		{name: "body over its limit", body: `{"kind":"k","args":"` + strings.Repeat("x", 3000) + `"}`, status: 413, field: ""},
		{name: "args over the payload limit", body: `{"kind":"k","args":"` + big + `"}`, status: 413, field: "args"},
		{name: "batch args over the payload limit", path: batch, body: `[{"kind":"k"},{"kind":"k","args":"` + big + `"}]`, status: 413, field: "tasks[1].args"},
		{name: "batch over its tasks", path: batch, body: `[{"kind":"k"},{"kind":"k"},{"kind":"k"},{"kind":"k"}]`, status: 413, field: "tasks"},
		{name: "batch body over its limit", path: batch, body: `[{"kind":"k","args":"` + strings.Repeat("x", 9000) + `"}]`, status: 413, field: ""},
		// 415.
		{name: "text body", body: `{"kind":"k"}`, header: []string{"Content-Type", "text/plain"}, status: 415},
		{name: "form body", body: `kind=k`, header: []string{"Content-Type", "application/x-www-form-urlencoded"}, status: 415},
		{name: "batch text body", path: batch, body: `[{"kind":"k"}]`, header: []string{"Content-Type", "text/csv"}, status: 415},
		{name: "malformed Content-Type", body: `{"kind":"k"}`, header: []string{"Content-Type", "application/json; ="}, status: 415},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.method == "" {
				c.method = "POST"
			}
			if c.path == "" {
				c.path = task
			}
			c.check(t, a)
		})
	}
	// Nothing refused was added: the queue holds the one task.
	qi, err := a.in.Queue(context.Background(), a.queue)
	if err != nil {
		t.Fatal(err)
	}
	if qi.Waiting != 1 {
		t.Fatalf("%d tasks waiting; want only the one added first", qi.Waiting)
	}
}

// 405 answers with Allow.
func TestMethodNotAllowed(t *testing.T) {
	a := newAPI(t, testenv.Redis(t), Config{})
	for _, c := range []struct{ method, path, allow string }{
		{"DELETE", "/v1/tasks/q/k", "GET, HEAD"},
		{"PUT", "/v1/queues/q/tasks", "POST"},
		{"GET", "/v1/queues/q/tasks/batch", "POST"},
		{"POST", "/v1/queues", "GET, HEAD"},
		{"POST", "/v1/tasks/q/k", "GET, HEAD"},
		{"POST", "/v1/tasks/q/cancel", "GET, HEAD"}, // the task "q/cancel"
		{"GET", "/v1/tasks/q/k/cancel", "POST"},
	} {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			r := errCase{method: c.method, path: c.path, status: 405}.check(t, a)
			if got := r.Header.Get("Allow"); got != c.allow {
				t.Fatalf("Allow %q, want %q", got, c.allow)
			}
		})
	}
}

// Tokens: 401 without one of them (with WWW-Authenticate: Bearer), 403
// for a queue the token may not touch; a token limited to queues lists
// only those.
func TestTokens(t *testing.T) {
	q := testenv.Queue(t)
	other := q + "-other"
	b := newAPI(t, testenv.Redis(t), Config{Tokens: []Token{
		{Name: "limited", Secret: "secret-limited", Queues: []string{q}},
		{Name: "all", Secret: "secret-all"},
	}})
	b.queue = q
	lim := []string{"Authorization", "Bearer secret-limited"}
	all := []string{"Authorization", "bearer secret-all"}

	for _, c := range []errCase{
		{name: "no token", method: "POST", path: "/v1/queues/{q}/tasks", body: `{"kind":"k"}`, status: 401},
		{name: "wrong token", method: "POST", path: "/v1/queues/{q}/tasks", body: `{"kind":"k"}`, header: []string{"Authorization", "Bearer secret-limitee"}, status: 401},
		{name: "not bearer", method: "GET", path: "/v1/queues", header: []string{"Authorization", "Basic c2VjcmV0LWFsbDo="}, status: 401},
		{name: "empty bearer", method: "GET", path: "/v1/queues", header: []string{"Authorization", "Bearer "}, status: 401},
		{name: "no token to read", method: "GET", path: "/v1/tasks/{q}/x", status: 401},
		{name: "no token to list", method: "GET", path: "/v1/queues", status: 401},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := c.check(t, b)
			if h := r.Header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer") {
				t.Fatalf("WWW-Authenticate %q", h)
			}
		})
	}

	b.do("POST", "/v1/queues/"+q+"/tasks", `{"kind":"k","id":"mine"}`, lim...).want(t, http.StatusCreated)
	b.do("POST", "/v1/queues/"+other+"/tasks", `{"kind":"k","id":"theirs"}`, all...).want(t, http.StatusCreated)
	for _, c := range []errCase{
		{name: "enqueue", method: "POST", path: "/v1/queues/" + other + "/tasks", body: `{"kind":"k"}`},
		{name: "batch", method: "POST", path: "/v1/queues/" + other + "/tasks/batch", body: `[{"kind":"k"}]`},
		{name: "read a task", method: "GET", path: "/v1/tasks/" + other + "/theirs"},
		{name: "read a task escaped", method: "GET", path: "/v1/tasks/" + other + "%2Ftheirs"},
		{name: "outcome", method: "GET", path: "/v1/tasks/" + other + "/theirs/outcome"},
		{name: "cancel", method: "POST", path: "/v1/tasks/" + other + "/theirs/cancel"},
		{name: "a queue", method: "GET", path: "/v1/queues/" + other},
	} {
		t.Run("forbidden "+c.name, func(t *testing.T) {
			c.header, c.status, c.field = lim, 403, "queue"
			r := c.check(t, b)
			if !strings.Contains(r.msg(), other) || strings.Contains(string(r.Body), "secret") {
				t.Fatalf("error %q: want the queue named, no secret", r.msg())
			}
		})
	}
	b.do("GET", "/v1/tasks/"+other+"/theirs", nil, all...).want(t, http.StatusOK)
	b.do("GET", "/v1/tasks/"+q+"/mine", nil, lim...).want(t, http.StatusOK)
	b.do("GET", "/v1/queues/"+q, nil, lim...).want(t, http.StatusOK)

	names := func(r *reply) map[string]bool {
		m := map[string]bool{}
		for _, x := range r.JSON["queues"].([]any) {
			m[x.(map[string]any)["queue"].(string)] = true
		}
		return m
	}
	if got := names(b.do("GET", "/v1/queues", nil, lim...).want(t, http.StatusOK)); len(got) != 1 || !got[q] {
		t.Fatalf("the limited token lists %v; want only %s", got, q)
	}
	if got := names(b.do("GET", "/v1/queues", nil, all...).want(t, http.StatusOK)); !got[q] || !got[other] {
		t.Fatalf("the token of all queues lists %v; want %s and %s", got, q, other)
	}
}

// Without tokens the API answers only requests to a loopback host, and
// refuses cross-origin browser writes in any case.
func TestNoTokenAPI(t *testing.T) {
	a := newAPI(t, testenv.Redis(t), Config{})
	a.do("POST", "/v1/queues/"+a.queue+"/tasks", `{"kind":"k"}`).want(t, http.StatusCreated)
	a.do("GET", "/v1/queues/"+a.queue, nil, "Host", "localhost").want(t, http.StatusOK)
	for _, c := range []errCase{
		{name: "another host", method: "GET", path: "/v1/queues", status: 403},
		{name: "another host writes", method: "POST", path: "/v1/queues/{q}/tasks", body: `{"kind":"k"}`, status: 403},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, a.srv.URL+strings.ReplaceAll(c.path, "{q}", a.queue), nil)
			req.Host = "evil.example"
			resp, err := a.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.status)
			}
		})
	}
	t.Run("cross-origin write", func(t *testing.T) {
		errCase{method: "POST", path: "/v1/queues/{q}/tasks", body: `{"kind":"k"}`, header: []string{"Sec-Fetch-Site", "cross-site"}, status: 403}.check(t, a)
	})
	t.Run("cross-origin write by Origin", func(t *testing.T) {
		errCase{method: "POST", path: "/v1/queues/{q}/tasks", body: `{"kind":"k"}`, header: []string{"Origin", "https://evil.example"}, status: 403}.check(t, a)
	})
}

// A write Redis refuses (OOM) or that fails on the way is a 503 with
// Retry-After, saying whether the tasks may have been added.
func TestRedisFailures(t *testing.T) {
	a := newAPI(t, testenv.Redis(t), Config{})
	// The client has made the queue's stream (a first write does).
	a.do("POST", "/v1/queues/"+a.queue+"/tasks", `{"kind":"k"}`).want(t, http.StatusCreated)
	for _, c := range []struct {
		name, mode, path, body, says string
	}{
		{"full", "oom", "/v1/queues/{q}/tasks", `{"kind":"k","id":"a"}`, "was not added"},
		{"full batch", "oom", "/v1/queues/{q}/tasks/batch", `[{"kind":"k","id":"b"}]`, "safe when every task has an \"id\""},
		{"down", "down", "/v1/queues/{q}/tasks", `{"kind":"k","id":"c"}`, "may have been added; retrying is safe when the task has an \"id\""},
		{"down batch", "down", "/v1/queues/{q}/tasks/batch", `[{"kind":"k","id":"d"}]`, "may have been added"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a.fault.mode.Store(c.mode)
			defer a.fault.mode.Store("")
			r := errCase{method: "POST", path: c.path, body: c.body, status: 503}.check(t, a)
			if r.Header.Get("Retry-After") == "" || !strings.Contains(r.msg(), c.says) {
				t.Fatalf("Retry-After %q, error %q; want it to say %q", r.Header.Get("Retry-After"), r.msg(), c.says)
			}
		})
	}
	// Once Redis answers, the retry with the id adds the task.
	a.do("POST", "/v1/queues/"+a.queue+"/tasks", `{"kind":"k","id":"c"}`).want(t, http.StatusCreated)
}

// Hostile input is never echoed at length, nor a secret.
func TestErrorsDoNotEcho(t *testing.T) {
	a := newAPI(t, testenv.Redis(t), Config{})
	long := strings.Repeat("<script>", 5000)
	for _, body := range []string{
		`{"kind":"` + long + `"}`,
		`{"kind":"k","id":"` + long + `"}`,
		`{"kind":"k","` + long + `":1}`,
		`{"kind":"k","delay":"` + long + `"}`,
		`{"kind":"k","meta":{"` + long + `":1}}`,
		`{"kind":"k","args":{"` + long + `":{"$bytes":"!"}}}`,
		`{"kind":"k","args":[` + strings.Repeat("9", 5000) + `e999]}`,
	} {
		r := a.do("POST", "/v1/queues/"+a.queue+"/tasks", body).want(t, http.StatusBadRequest)
		if len(r.Body) > 600 {
			t.Fatalf("error of %d bytes for hostile input: %.300s", len(r.Body), r.Body)
		}
	}
	r := a.do("GET", "/v1/"+strings.Repeat("a", 5000), nil).want(t, http.StatusNotFound)
	if len(r.Body) > 600 {
		t.Fatalf("error of %d bytes: %.300s", len(r.Body), r.Body)
	}
}

// The meta bounds the API checks are the client's: one past them, the
// client refuses the task too.
func TestMetaBoundsAreTheClients(t *testing.T) {
	c := testenv.Client(t, testenv.Redis(t))
	q := testenv.Queue(t)
	ctx := context.Background()
	many := map[string]string{}
	for i := range maxMetaEntries + 1 {
		many[fmt.Sprint("k", i)] = "v"
	}
	for name, m := range map[string]map[string]string{
		"entries": many,
		"key":     {strings.Repeat("k", maxMetaKey+1): "v"},
		"value":   {"k": strings.Repeat("v", maxMetaValue+1)},
	} {
		if _, err := c.Enqueue(ctx, &taskArgs{kind: "k"}, &client.EnqueueOpts{Queue: q, Meta: m}); err == nil {
			t.Errorf("the client took metadata one past the %s bound", name)
		}
	}
	at := map[string]string{strings.Repeat("k", maxMetaKey): strings.Repeat("v", maxMetaValue)}
	for i := range maxMetaEntries - 1 {
		at[fmt.Sprint("k", i)] = "v"
	}
	if _, err := c.Enqueue(ctx, &taskArgs{kind: "k"}, &client.EnqueueOpts{Queue: q, Meta: at, Deadline: time.Now().Add(time.Hour)}); err != nil {
		t.Errorf("the client refused metadata at the bounds: %v", err)
	}
}
