package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// Upload is a handler's args with a field of every kind the JSON rule
// maps.
type Upload struct {
	Path  string            `msgpack:"path"`
	Size  int64             `msgpack:"size"`
	Ratio float64           `msgpack:"ratio"`
	Tags  []string          `msgpack:"tags"`
	Attrs map[string]string `msgpack:"attrs"`
	Data  []byte            `msgpack:"data"`
	At    time.Time         `msgpack:"at"`
	OK    bool              `msgpack:"ok"`
	Next  *Upload           `msgpack:"next"`
}

func (Upload) Kind() string { return "api.upload" }

// Uploaded is Upload's result.
type Uploaded struct {
	Path  string   `msgpack:"path"`
	Bytes int      `msgpack:"bytes"`
	Tags  []string `msgpack:"tags"`
}

// Block is a task whose handler waits for its release.
type Block struct {
	N int `msgpack:"n"`
}

func (Block) Kind() string { return "api.block" }

// Fail is a task whose handler fails for good.
type Fail struct {
	Msg string `msgpack:"msg"`
}

func (Fail) Kind() string { return "api.fail" }

// seen is what a handler was given: its task and args, and its trace
// context and metadata.
type seen struct {
	id          string
	args        Upload
	traceparent string
	tracestate  string
	meta        map[string]string
}

// fleet is a worker serving a.queue: api.upload tells seen of each task
// and returns Uploaded; api.block tells started and waits for release (or
// its ctx); api.fail fails permanently with its Msg.
type fleet struct {
	seen    chan seen
	started chan string
	release chan struct{}
}

func startFleet(t *testing.T, a *api) *fleet {
	t.Helper()
	f := &fleet{seen: make(chan seen, 16), started: make(chan string, 16), release: make(chan struct{})}
	testenv.StartWorker(t, a.env.RDB, a.queue, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, u Upload) (Uploaded, error) {
			tk, _ := worker.TaskFromContext(ctx)
			tp, ts := worker.TraceContext(ctx)
			f.seen <- seen{id: tk.ID, args: u, traceparent: tp, tracestate: ts, meta: worker.Meta(ctx)}
			return Uploaded{Path: u.Path, Bytes: len(u.Data), Tags: u.Tags}, nil
		})
		worker.Handle(w, func(ctx context.Context, b Block) (Block, error) {
			tk, _ := worker.TaskFromContext(ctx)
			f.started <- tk.ID
			select {
			case <-f.release:
				return Block{N: b.N * 2}, nil
			case <-ctx.Done():
				return Block{}, ctx.Err()
			}
		})
		worker.Handle(w, func(ctx context.Context, x Fail) (struct{}, error) {
			return struct{}{}, worker.Permanent(fmt.Errorf("%s", x.Msg))
		})
	}, true)
	return f
}

// next returns what the upload handler saw next.
func (f *fleet) next(t *testing.T) seen {
	t.Helper()
	select {
	case s := <-f.seen:
		return s
	case <-time.After(30 * time.Second):
		t.Fatal("the handler did not run within 30s")
		return seen{}
	}
}

const uploadJSON = `{"path":"in/a.png","size":1234567890123,"ratio":0.25,"tags":["x","y"],"attrs":{"k":"v"},` +
	`"data":{"$bytes":"AQID/w=="},"at":{"$time":"2026-01-02T03:04:05.123456789Z"},"ok":true,"next":{"path":"n","size":-3}}`

var uploadGo = Upload{
	Path: "in/a.png", Size: 1234567890123, Ratio: 0.25, Tags: []string{"x", "y"}, Attrs: map[string]string{"k": "v"},
	Data: []byte{1, 2, 3, 255}, At: time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC), OK: true,
	Next: &Upload{Path: "n", Size: -3},
}

// A task enqueued over HTTP and one enqueued from Go with the same values
// reach the Go handler as equal structs; the HTTP one's outcome comes back
// as JSON by the inverse rule.
func TestHTTPAndGoTasksDecodeAlike(t *testing.T) {
	a := newAPI(t, testenv.Redis(t), Config{})
	f := startFleet(t, a)

	r := a.do("POST", "/v1/queues/"+a.queue+"/tasks", `{"kind":"api.upload","id":"h1","args":`+uploadJSON+`}`).want(t, http.StatusCreated)
	fromHTTP := f.next(t)
	if fromHTTP.id != a.queue+"/h1" || r.JSON["id"] != fromHTTP.id {
		t.Fatalf("handler ran %q, the API answered %v", fromHTTP.id, r.JSON["id"])
	}
	h, err := a.c.Enqueue(context.Background(), uploadGo, &client.EnqueueOpts{Queue: a.queue, ID: "g1"})
	if err != nil {
		t.Fatal(err)
	}
	fromGo := f.next(t)
	if fromGo.id != h.ID() {
		t.Fatalf("handler ran %q, want %q", fromGo.id, h.ID())
	}
	if !reflect.DeepEqual(fromHTTP.args, fromGo.args) {
		t.Fatalf("the handler got\n%#v over HTTP,\n%#v from Go", fromHTTP.args, fromGo.args)
	}
	if !fromGo.args.At.Equal(uploadGo.At) || fromGo.args.Next == nil || fromGo.args.Next.Size != -3 {
		t.Fatalf("the handler got %#v from Go; want %#v", fromGo.args, uploadGo)
	}

	out := a.do("GET", "/v1/tasks/"+a.queue+"/h1/outcome?wait=30s", nil).want(t, http.StatusOK)
	var got struct {
		ID     string
		State  string
		Ended  bool
		Result json.RawMessage
	}
	if err := json.Unmarshal(out.Body, &got); err != nil {
		t.Fatal(err)
	}
	if got.ID != a.queue+"/h1" || got.State != "succeeded" || !got.Ended || string(got.Result) != `{"path":"in/a.png","bytes":4,"tags":["x","y"]}` {
		t.Fatalf("outcome %s", out.Body)
	}
}

// POST /v1/queues/{queue}/tasks: 201 with the state given; 200 with
// duplicate true and the state read back for an existing id.
func TestEnqueue(t *testing.T) {
	a := newAPI(t, testenv.Redis(t), Config{})
	base := "/v1/queues/" + a.queue + "/tasks"

	r := a.do("POST", base, `{"kind":"k"}`).want(t, http.StatusCreated)
	if id, _ := r.JSON["id"].(string); !strings.HasPrefix(id, a.queue+"/") || r.JSON["queue"] != a.queue || r.JSON["state"] != "pending" || r.JSON["duplicate"] != false {
		t.Fatalf("got %s", r.Body)
	}
	if r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("Content-Type %q", r.Header.Get("Content-Type"))
	}

	body := `{"kind":"k","id":"t1","args":{"a":1},"max_attempts":3,"timeout":"30s","retention":"1h","deadline":"1h","meta":{"tenant":"t"},"rate_key":"s3:b"}`
	r = a.do("POST", base, body).want(t, http.StatusCreated)
	if r.JSON["id"] != a.queue+"/t1" || r.JSON["state"] != "pending" {
		t.Fatalf("got %s", r.Body)
	}
	in, err := a.in.Task(context.Background(), a.queue+"/t1")
	if err != nil {
		t.Fatal(err)
	}
	if in.MaxAttempts != 3 || in.Meta["tenant"] != "t" || in.RateKey != "s3:b" || string(in.Args) != `{"a":1}` {
		t.Fatalf("the task as the inspector reads it: %+v", in)
	}

	r = a.do("POST", base, body).want(t, http.StatusOK)
	if r.JSON["id"] != a.queue+"/t1" || r.JSON["duplicate"] != true || r.JSON["state"] != "pending" {
		t.Fatalf("duplicate: got %s", r.Body)
	}

	r = a.do("POST", base, `{"kind":"k","delay":"1h"}`).want(t, http.StatusCreated)
	if r.JSON["state"] != "scheduled" {
		t.Fatalf("delayed: got %s", r.Body)
	}
	at := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	r = a.do("POST", base, `{"kind":"k","id":"later","process_at":"`+at+`"}`).want(t, http.StatusCreated)
	if r.JSON["state"] != "scheduled" {
		t.Fatalf("process_at: got %s", r.Body)
	}
	if st, err := a.c.Task(a.queue + "/later"); err != nil {
		t.Fatal(err)
	} else if s, err := st.State(context.Background()); err != nil || s != client.StateScheduled {
		t.Fatalf("state %v, %v; want scheduled", s, err)
	}

	// A partitioned task's state is read: the second of its key waits.
	r = a.do("POST", base, `{"kind":"k","partition_key":"user:1"}`).want(t, http.StatusCreated)
	if r.JSON["state"] != "pending" {
		t.Fatalf("first of its partition: got %s", r.Body)
	}
	r = a.do("POST", base, `{"kind":"k","partition_key":"user:1"}`).want(t, http.StatusCreated)
	if r.JSON["state"] != "waiting" {
		t.Fatalf("second of its partition: got %s", r.Body)
	}

	// Content-Type may be left out, and may carry a charset.
	a.do("POST", base, `{"kind":"k"}`, "Content-Type", "").want(t, http.StatusCreated)
	a.do("POST", base, `{"kind":"k"}`, "Content-Type", "application/json; charset=utf-8").want(t, http.StatusCreated)
}

// POST /v1/queues/{queue}/tasks/batch takes a JSON array or JSON lines and
// answers the ids in order.
func TestBatch(t *testing.T) {
	a := newAPI(t, testenv.Redis(t), Config{})
	base := "/v1/queues/" + a.queue + "/tasks/batch"
	ids := func(r *reply) []string {
		var out []string
		for _, x := range r.JSON["tasks"].([]any) {
			m := x.(map[string]any)
			out = append(out, fmt.Sprint(m["id"], " ", m["duplicate"]))
		}
		return out
	}
	q := a.queue
	r := a.do("POST", base, `[{"kind":"k","id":"a"},{"kind":"k","id":"b","args":[1,2]}, {"kind":"k","id":"c","queue":"`+q+`"}]`).want(t, http.StatusCreated)
	if got, want := ids(r), []string{q + "/a false", q + "/b false", q + "/c false"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// JSON lines by Content-Type, with a duplicate among them.
	lines := "{\"kind\":\"k\",\"id\":\"d\"}\n\n{\"kind\":\"k\",\"id\":\"a\"}\r\n{\"kind\":\"k\",\"id\":\"e\"}"
	r = a.do("POST", base, lines, "Content-Type", "application/x-ndjson").want(t, http.StatusCreated)
	if got, want := ids(r), []string{q + "/d false", q + "/a true", q + "/e false"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// JSON lines by the first byte; every task a duplicate: 200.
	r = a.do("POST", base, "  {\"kind\":\"k\",\"id\":\"d\"}\n{\"kind\":\"k\",\"id\":\"e\"}\n", "Content-Type", "").want(t, http.StatusOK)
	if got, want := ids(r), []string{q + "/d true", q + "/e true"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	r = a.do("POST", base, "{\"kind\":\"k\",\"id\":\"f\"}\n", "Content-Type", "application/jsonl").want(t, http.StatusCreated)
	if got, want := ids(r), []string{q + "/f false"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	qi, err := a.in.Queue(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	if qi.Waiting != 6 {
		t.Fatalf("%d tasks waiting, want the 6 of the batches", qi.Waiting)
	}

	// A bad task anywhere: nothing is added.
	a.do("POST", base, `[{"kind":"k","id":"g"},{"kind":"k","id":"h","delay":"soon"}]`).want(t, http.StatusBadRequest)
	if st, _ := a.c.Task(q + "/g"); st != nil {
		if _, err := st.State(context.Background()); err == nil {
			t.Fatal("task g of a refused batch was added")
		}
	}
}

// GET /v1/tasks/{id}, both ways of naming it; the states are the
// client's.
func TestGetTask(t *testing.T) {
	a := newAPI(t, testenv.Redis(t), Config{})
	q := a.queue
	a.do("POST", "/v1/queues/"+q+"/tasks", `{"kind":"k","id":"t1","args":{"x":[1,"two"]},"meta":{"m":"v"}}`).want(t, http.StatusCreated)
	for _, p := range []string{"/v1/tasks/" + q + "/t1", "/v1/tasks/" + url.PathEscape(q+"/t1")} {
		r := a.do("GET", p, nil).want(t, http.StatusOK)
		if r.JSON["id"] != q+"/t1" || r.JSON["queue"] != q || r.JSON["kind"] != "k" || r.JSON["state"] != "pending" ||
			r.JSON["max_attempts"] != float64(25) || r.JSON["enqueued_at"] == nil {
			t.Fatalf("GET %s: %s", p, r.Body)
		}
		if args, _ := json.Marshal(r.JSON["args"]); string(args) != `{"x":[1,"two"]}` {
			t.Fatalf("GET %s: args %s", p, args)
		}
		if meta, _ := r.JSON["meta"].(map[string]any); meta["m"] != "v" {
			t.Fatalf("GET %s: meta %v", p, r.JSON["meta"])
		}
	}

	// A task whose key is "outcome", or "cancel": GET reads it.
	a.do("POST", "/v1/queues/"+q+"/tasks", `{"kind":"k","id":"outcome"}`).want(t, http.StatusCreated)
	r := a.do("GET", "/v1/tasks/"+q+"/outcome", nil).want(t, http.StatusOK)
	if r.JSON["id"] != q+"/outcome" {
		t.Fatalf("got %s", r.Body)
	}

	// States: scheduled, waiting (a partition's second task), cancelled.
	a.do("POST", "/v1/queues/"+q+"/tasks", `{"kind":"k","id":"later","delay":"1h"}`).want(t, http.StatusCreated)
	a.do("POST", "/v1/queues/"+q+"/tasks", `{"kind":"k","id":"p1","partition_key":"p"}`).want(t, http.StatusCreated)
	a.do("POST", "/v1/queues/"+q+"/tasks", `{"kind":"k","id":"p2","partition_key":"p"}`).want(t, http.StatusCreated)
	a.do("POST", "/v1/queues/"+q+"/tasks", `{"kind":"k","id":"parent"}`).want(t, http.StatusCreated)
	parent, err := a.c.Task(q + "/parent")
	if err != nil {
		t.Fatal(err)
	}
	cont, err := parent.ContinueWith(context.Background(), &taskArgs{kind: "k"}, &client.ContinueOpts{EnqueueOpts: client.EnqueueOpts{ID: "cont"}})
	if err != nil {
		t.Fatal(err)
	}
	if cont.ID() != q+"/cont" {
		t.Fatalf("continuation %s", cont.ID())
	}
	a.do("POST", "/v1/tasks/"+q+"/t1/cancel", nil).want(t, http.StatusOK)
	for key, want := range map[string]string{"later": "scheduled", "p1": "pending", "p2": "waiting", "t1": "cancelled", "parent": "pending", "cont": "waiting"} {
		r := a.do("GET", "/v1/tasks/"+q+"/"+key, nil).want(t, http.StatusOK)
		if r.JSON["state"] != want {
			t.Errorf("task %s: state %v, want %s; %s", key, r.JSON["state"], want, r.Body)
		}
	}
	a.do("GET", "/v1/tasks/"+q+"/nothere", nil).want(t, http.StatusNotFound)
}

// GET /v1/tasks/{id}/outcome?wait= returns as soon as the task ended: the
// handler waits for its release, and the outcome request, waiting before,
// answers with the result.
func TestOutcomeWaitsForTheEnd(t *testing.T) {
	a := newAPI(t, testenv.Redis(t), Config{})
	f := startFleet(t, a)
	q := a.queue
	a.do("POST", "/v1/queues/"+q+"/tasks", `{"kind":"api.block","id":"b1","args":{"n":21}}`).want(t, http.StatusCreated)
	select {
	case <-f.started:
	case <-time.After(30 * time.Second):
		t.Fatal("the handler did not start")
	}
	// Not ended yet: no wait answers at once.
	r := a.do("GET", "/v1/tasks/"+q+"/b1/outcome", nil).want(t, http.StatusOK)
	if r.JSON["state"] != "running" || r.JSON["ended"] != false {
		t.Fatalf("got %s", r.Body)
	}
	r = a.do("GET", "/v1/tasks/"+q+"/b1", nil).want(t, http.StatusOK)
	if r.JSON["state"] != "running" || r.JSON["worker"] == nil {
		t.Fatalf("GET of a running task: %s", r.Body)
	}
	done := make(chan *reply, 1)
	go func() { done <- a.do("GET", "/v1/tasks/"+url.PathEscape(q+"/b1")+"/outcome?wait=2m", nil) }()
	waiting(t, a, q)
	select {
	case r := <-done:
		t.Fatalf("the outcome answered before the task ended: %s", r.Body)
	default:
	}
	released := time.Now()
	close(f.release)
	select {
	case r := <-done:
		r.want(t, http.StatusOK)
		if r.JSON["state"] != "succeeded" || r.JSON["ended"] != true || r.JSON["id"] != q+"/b1" {
			t.Fatalf("got %s", r.Body)
		}
		if res, _ := json.Marshal(r.JSON["result"]); string(res) != `{"n":42}` {
			t.Fatalf("result %s", res)
		}
	case <-time.After(time.Minute):
		t.Fatal("the outcome did not answer within a minute of the task's end (its wait was 2m)")
	}
	t.Logf("answered %v after the release", time.Since(released))

	// Ended: no wait needed.
	r = a.do("GET", "/v1/tasks/"+q+"/b1/outcome", nil).want(t, http.StatusOK)
	if res, _ := json.Marshal(r.JSON["result"]); r.JSON["state"] != "succeeded" || string(res) != `{"n":42}` {
		t.Fatalf("got %s", r.Body)
	}
	r = a.do("GET", "/v1/tasks/"+q+"/b1", nil).want(t, http.StatusOK)
	if res, _ := json.Marshal(r.JSON["result"]); r.JSON["state"] != "succeeded" || string(res) != `{"n":42}` || r.JSON["finished_at"] == nil {
		t.Fatalf("GET of a succeeded task: %s", r.Body)
	}

	// A dead task: its error and attempt.
	a.do("POST", "/v1/queues/"+q+"/tasks", `{"kind":"api.fail","id":"f1","args":{"msg":"disk full"}}`).want(t, http.StatusCreated)
	r = a.do("GET", "/v1/tasks/"+q+"/f1/outcome?wait=1m", nil).want(t, http.StatusOK)
	if r.JSON["state"] != "dead" || r.JSON["ended"] != true || r.JSON["attempt"] != float64(1) || !strings.Contains(r.msg(), "disk full") {
		t.Fatalf("got %s", r.Body)
	}
	r = a.do("GET", "/v1/tasks/"+q+"/f1", nil).want(t, http.StatusOK)
	if r.JSON["state"] != "dead" || !strings.Contains(fmt.Sprint(r.JSON["last_error"]), "disk full") {
		t.Fatalf("GET of a dead task: %s", r.Body)
	}
	a.do("GET", "/v1/tasks/"+q+"/none/outcome?wait=1s", nil).want(t, http.StatusNotFound)
}

// waiting returns once an outcome request waits on a task of queue q (the
// client registers each wait in Redis).
func waiting(t *testing.T, a *api, q string) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, "an outcome request waits", func() bool {
		n, err := a.env.RDB.ZCard(context.Background(), keys.ForQueue(q).Hooks()).Result()
		return err == nil && n > 0
	})
}

// A wait that runs out answers the state with ended false; a caller that
// goes away ends the wait at once.
func TestOutcomeWaitEnds(t *testing.T) {
	a := newAPI(t, testenv.Redis(t), Config{MaxWait: time.Hour})
	q := a.queue
	a.do("POST", "/v1/queues/"+q+"/tasks", `{"kind":"k","id":"w"}`).want(t, http.StatusCreated)
	start := time.Now()
	r := a.do("GET", "/v1/tasks/"+q+"/w/outcome?wait=300ms", nil).want(t, http.StatusOK)
	if r.JSON["state"] != "pending" || r.JSON["ended"] != false || r.JSON["result"] != nil {
		t.Fatalf("got %s", r.Body)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("answered after %v, before its wait of 300ms", d)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gone := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", a.srv.URL+"/v1/tasks/"+q+"/w/outcome?wait=1h", nil)
		resp, err := a.srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		gone <- err
	}()
	waiting(t, a, q)
	cancel()
	if err := <-gone; err == nil {
		t.Fatal("the cancelled request got an answer")
	}
	for {
		select {
		case r := <-a.served:
			if strings.HasSuffix(r.URL.Path, "/outcome") && r.URL.Query().Get("wait") == "1h" {
				return // its handler returned
			}
		case <-time.After(time.Minute):
			t.Fatal("the handler still waits a minute after its caller went away")
		}
	}
}

// POST /v1/tasks/{id}/cancel answers the state after the cancel.
func TestCancel(t *testing.T) {
	a := newAPI(t, testenv.Redis(t), Config{})
	f := startFleet(t, a)
	q := a.queue
	a.do("POST", "/v1/queues/"+q+"/tasks", `{"kind":"k","id":"c1","delay":"1h"}`).want(t, http.StatusCreated)
	r := a.do("POST", "/v1/tasks/"+q+"/c1/cancel", nil).want(t, http.StatusOK)
	if r.JSON["id"] != q+"/c1" || r.JSON["state"] != "cancelled" {
		t.Fatalf("got %s", r.Body)
	}
	// Again: the final state it has.
	r = a.do("POST", "/v1/tasks/"+url.PathEscape(q+"/c1")+"/cancel", nil).want(t, http.StatusOK)
	if r.JSON["state"] != "cancelled" {
		t.Fatalf("got %s", r.Body)
	}
	// A running task: its handler is stopped; the outcome tells the end.
	a.do("POST", "/v1/queues/"+q+"/tasks", `{"kind":"api.block","id":"c2"}`).want(t, http.StatusCreated)
	<-f.started
	r = a.do("POST", "/v1/tasks/"+q+"/c2/cancel", nil).want(t, http.StatusOK)
	if r.JSON["state"] != "running" {
		t.Fatalf("got %s", r.Body)
	}
	r = a.do("GET", "/v1/tasks/"+q+"/c2/outcome?wait=1m", nil).want(t, http.StatusOK)
	if r.JSON["state"] != "cancelled" || r.JSON["ended"] != true {
		t.Fatalf("got %s", r.Body)
	}
	a.do("POST", "/v1/tasks/"+q+"/none/cancel", nil).want(t, http.StatusNotFound)
}

// GET /v1/queues and /v1/queues/{queue}.
func TestQueues(t *testing.T) {
	a := newAPI(t, testenv.Redis(t), Config{})
	q := a.queue
	a.do("POST", "/v1/queues/"+q+"/tasks", `{"kind":"k"}`).want(t, http.StatusCreated)
	r := a.do("GET", "/v1/queues", nil).want(t, http.StatusOK)
	found := false
	for _, x := range r.JSON["queues"].([]any) {
		if m := x.(map[string]any); m["queue"] == q {
			found = m["waiting"] == float64(1)
		}
	}
	if !found {
		t.Fatalf("queue %s with 1 waiting task not in %s", q, r.Body)
	}
	r = a.do("GET", "/v1/queues/"+q, nil).want(t, http.StatusOK)
	if r.JSON["queue"] != q || r.JSON["waiting"] != float64(1) {
		t.Fatalf("got %s", r.Body)
	}
	a.do("GET", "/v1/queues/"+q+"-none", nil).want(t, http.StatusNotFound)
}

// GET /v1/openapi.json serves the document, without a token.
func TestOpenAPIServed(t *testing.T) {
	a := newAPI(t, testenv.Redis(t), Config{Tokens: []Token{{Name: "a", Secret: "s-a"}}})
	r := a.do("GET", "/v1/openapi.json", nil).want(t, http.StatusOK)
	if string(r.Body) != string(OpenAPI) || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("got %.100s (%s)", r.Body, r.Header.Get("Content-Type"))
	}
}

// The traceparent and tracestate of the request are the task's trace
// context, which its handler sees.
func TestTraceContext(t *testing.T) {
	a := newAPI(t, testenv.Redis(t), Config{})
	f := startFleet(t, a)
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	a.do("POST", "/v1/queues/"+a.queue+"/tasks", `{"kind":"api.upload","meta":{"tenant":"t1"}}`, "traceparent", tp, "tracestate", "vendor=x").want(t, http.StatusCreated)
	s := f.next(t)
	if s.traceparent != tp || s.tracestate != "vendor=x" || s.meta["tenant"] != "t1" {
		t.Fatalf("the handler saw traceparent %q, tracestate %q, meta %v", s.traceparent, s.tracestate, s.meta)
	}
	a.do("POST", "/v1/queues/"+a.queue+"/tasks/batch", `[{"kind":"api.upload"}]`, "traceparent", tp).want(t, http.StatusCreated)
	if s := f.next(t); s.traceparent != tp {
		t.Fatalf("a batch's task: traceparent %q", s.traceparent)
	}
	// An invalid traceparent is ignored.
	a.do("POST", "/v1/queues/"+a.queue+"/tasks", `{"kind":"api.upload"}`, "traceparent", "00-zz-1").want(t, http.StatusCreated)
	if s := f.next(t); s.traceparent != "" {
		t.Fatalf("traceparent %q from an invalid header", s.traceparent)
	}
}

// A task that ended keeps what Redis still holds of it: a succeeded task's
// envelope is gone with its record (only the result is kept), so its kind
// and max_attempts are absent rather than "" and 0; a dead or cancelled
// task's record keeps its envelope, and they are there.
func TestGetFinishedTask(t *testing.T) {
	a := newAPI(t, testenv.Redis(t), Config{})
	startFleet(t, a)
	q := a.queue
	a.do("POST", "/v1/queues/"+q+"/tasks", `{"kind":"api.upload","id":"s1","max_attempts":3,"args":`+uploadJSON+`}`).want(t, http.StatusCreated)
	a.do("POST", "/v1/queues/"+q+"/tasks", `{"kind":"api.fail","id":"d1","max_attempts":4,"args":{"msg":"no"}}`).want(t, http.StatusCreated)
	a.do("POST", "/v1/queues/"+q+"/tasks", `{"kind":"k","id":"c1","max_attempts":5,"delay":"1h"}`).want(t, http.StatusCreated)
	a.do("POST", "/v1/tasks/"+q+"/c1/cancel", nil).want(t, http.StatusOK)
	for key, want := range map[string]string{"s1": "succeeded", "d1": "dead"} {
		if r := a.do("GET", "/v1/tasks/"+q+"/"+key+"/outcome?wait=1m", nil).want(t, http.StatusOK); r.JSON["state"] != want {
			t.Fatalf("outcome of %s: %s", key, r.Body)
		}
	}
	for _, c := range []struct {
		key, state, kind string
		max              any
	}{
		{"s1", "succeeded", "", nil},
		{"d1", "dead", "api.fail", float64(4)},
		{"c1", "cancelled", "k", float64(5)},
	} {
		r := a.do("GET", "/v1/tasks/"+q+"/"+c.key, nil).want(t, http.StatusOK)
		kind, hasKind := r.JSON["kind"]
		max, hasMax := r.JSON["max_attempts"]
		if r.JSON["state"] != c.state || hasKind != (c.kind != "") || hasMax != (c.max != nil) ||
			(hasKind && kind != c.kind) || (hasMax && max != c.max) {
			t.Errorf("task %s: want state %s, kind %q, max_attempts %v; got %s", c.key, c.state, c.kind, c.max, r.Body)
		}
	}
}
