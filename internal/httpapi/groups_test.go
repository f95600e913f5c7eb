package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// gSquare is a member: it returns N*N, fails for good when N < 0, and
// blocks until cancelled when Block is set. Its JSON args are {"N": 3}.
type gSquare struct {
	N     int
	Block bool
}

func (gSquare) Kind() string { return "g.square" }

func gSquareRun(ctx context.Context, a gSquare) (int, error) {
	if a.Block {
		<-ctx.Done()
		return 0, context.Cause(ctx)
	}
	if a.N < 0 {
		return 0, worker.Permanent(errors.New("negative"))
	}
	return a.N * a.N, nil
}

// gSum is a join: it sums its group's results (patterns.JoinResults) and
// reports what it read on seen.
type gSum struct{ Tag string }

func (gSum) Kind() string { return "g.sum" }

type gJoinSeen struct {
	tag  string
	vals []int
	err  error
}

// gAPI is a test's API over HTTP: its Redis, client, queue, and server.
type gAPI struct {
	env   *testenv.Env
	c     *client.Client
	queue string
	srv   *httptest.Server
	seen  chan gJoinSeen
}

// newGroupAPI serves the API on a loopback httptest server, its config
// changed by tweak (may be nil).
func newGroupAPI(t *testing.T, tweak func(*Config)) *gAPI {
	t.Helper()
	env := testenv.Redis(t)
	a := &gAPI{env: env, c: testenv.Client(t, env), queue: testenv.Queue(t), seen: make(chan gJoinSeen, 16)}
	cfg := Config{Client: a.c, Inspector: inspect.New(env.RDB)}
	if tweak != nil {
		tweak(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.srv = httptest.NewServer(h)
	t.Cleanup(a.srv.Close)
	return a
}

// worker runs the members and joins of this file on queues (the test's
// queue when none).
func (a *gAPI) worker(t *testing.T, queues ...string) {
	t.Helper()
	cfg := &worker.Config{Concurrency: 8}
	if len(queues) > 0 {
		cfg.Queues = map[string]int{}
		for _, q := range queues {
			cfg.Queues[q] = 1
		}
	}
	testenv.StartWorker(t, a.env.RDB, a.queue, cfg, func(w *worker.Worker) {
		worker.Handle(w, gSquareRun)
		worker.Handle(w, func(ctx context.Context, s gSum) (int, error) {
			vals, err := patterns.JoinResults[int](ctx)
			a.seen <- gJoinSeen{tag: s.Tag, vals: vals, err: err}
			total := 0
			for _, v := range vals {
				total += v
			}
			return total, nil
		})
	}, true)
}

// gReply is an answer of the API.
type gReply struct {
	status int
	header http.Header
	body   []byte
}

func (r gReply) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("status %d, body %s: %v", r.status, r.body, err)
	}
}

// field returns the "field" of an error body.
func (r gReply) field(t *testing.T) string {
	t.Helper()
	var e struct {
		Error string  `json:"error"`
		Field *string `json:"field"`
	}
	r.json(t, &e)
	if e.Error == "" {
		t.Fatalf("status %d: no error in %s", r.status, r.body)
	}
	if e.Field == nil {
		return ""
	}
	return *e.Field
}

// do sends a request with body (a string as is, else as JSON; nil for
// none) and header pairs, and reads the answer.
func (a *gAPI) do(t *testing.T, method, path string, body any, header ...string) gReply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequestWithContext(gCtx(t), method, a.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	return gReply{status: resp.StatusCode, header: resp.Header, body: b}
}

func gCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// gTasks is n members of kind g.square with args {"N": n} for each n.
func gTasks(ns ...int) []map[string]any {
	out := make([]map[string]any, len(ns))
	for i, n := range ns {
		out[i] = map[string]any{"kind": "g.square", "args": map[string]any{"N": n}}
	}
	return out
}

// start posts a group and returns its id, wanting status.
func (a *gAPI) start(t *testing.T, body map[string]any, status int) groupStarted {
	t.Helper()
	r := a.do(t, "POST", "/v1/groups", body)
	if r.status != status {
		t.Fatalf("POST /v1/groups: status %d, want %d: %s", r.status, status, r.body)
	}
	var g groupStarted
	r.json(t, &g)
	return g
}

// outcome reads the group's outcome, waiting up to wait.
func (a *gAPI) outcome(t *testing.T, id string, wait string) outcomeOfGroup {
	t.Helper()
	r := a.do(t, "GET", "/v1/groups/"+url.PathEscape(id)+"/outcome?wait="+wait, nil)
	if r.status != http.StatusOK {
		t.Fatalf("outcome of %s: status %d: %s", id, r.status, r.body)
	}
	var o outcomeOfGroup
	r.json(t, &o)
	return o
}

func (a *gAPI) joinSeen(t *testing.T, tag string) gJoinSeen {
	t.Helper()
	ctx := gCtx(t)
	for {
		select {
		case s := <-a.seen:
			if s.tag == tag {
				return s
			}
		case <-ctx.Done():
			t.Fatalf("join %s did not run", tag)
		}
	}
}

// results returns the members' results as ints.
func gResults(t *testing.T, o outcomeOfGroup) []int {
	t.Helper()
	out := make([]int, len(o.Outcomes))
	for i, m := range o.Outcomes {
		if m.State != client.StateSucceeded || m.Error != "" {
			t.Fatalf("member %d: %+v", i, m)
		}
		if err := json.Unmarshal(m.Result, &out[i]); err != nil {
			t.Fatalf("member %d result %s: %v", i, m.Result, err)
		}
	}
	return out
}

// TestGroupForkJoin starts a ForkJoin over HTTP, with a member in another
// queue, and follows it to its end: the join, a Go handler, reads the
// members' results in submission order (patterns.JoinResults), and the
// outcome route shows each member's result as JSON.
func TestGroupForkJoin(t *testing.T) {
	t.Parallel()
	a := newGroupAPI(t, nil)
	other := a.queue + "-b"
	a.worker(t, a.queue, other)
	tasks := gTasks(1, 2, 3, 4)
	tasks[2]["queue"] = other
	g := a.start(t, map[string]any{"queue": a.queue, "tasks": tasks, "join": map[string]any{"kind": "g.sum", "args": map[string]any{"Tag": "fj"}}}, http.StatusCreated)
	if !strings.HasPrefix(g.ID, "group:"+a.queue+"/") || g.Duplicate || !strings.HasPrefix(g.Join, a.queue+"/") {
		t.Fatalf("started %+v", g)
	}
	seen := a.joinSeen(t, "fj")
	if seen.err != nil || !reflect.DeepEqual(seen.vals, []int{1, 4, 9, 16}) {
		t.Fatalf("the join read %v, %v; want [1 4 9 16]", seen.vals, seen.err)
	}
	o := a.outcome(t, g.ID, "20s")
	if !o.Ended || o.State != patterns.GroupSucceeded || o.Total != 4 || o.Succeeded != 4 || o.Done != 4 || o.Failed != 0 {
		t.Fatalf("outcome %+v", o)
	}
	if got := gResults(t, o); !reflect.DeepEqual(got, []int{1, 4, 9, 16}) {
		t.Fatalf("results %v", got)
	}
	if !strings.HasPrefix(o.Outcomes[2].ID, other+"/") {
		t.Fatalf("member 2 is %s, want a task of %s", o.Outcomes[2].ID, other)
	}
	// The join's outcome over the tasks' route: the sum.
	r := a.do(t, "GET", "/v1/tasks/"+url.PathEscape(g.Join)+"/outcome?wait=20s", nil)
	var jo struct {
		State  client.State `json:"state"`
		Result int          `json:"result"`
	}
	r.json(t, &jo)
	if r.status != http.StatusOK || jo.State != client.StateSucceeded || jo.Result != 30 {
		t.Fatalf("join outcome %d %s", r.status, r.body)
	}
}

// TestGroupMemberQueues: a member without a queue of its own goes to the
// group's; without a group queue, each member needs its own, and the home
// is the first member's.
func TestGroupMemberQueues(t *testing.T) {
	t.Parallel()
	a := newGroupAPI(t, nil)
	other := a.queue + "-b"
	a.worker(t, a.queue, other)
	tasks := gTasks(2, 3)
	tasks[0]["queue"] = other
	tasks[1]["queue"] = a.queue
	g := a.start(t, map[string]any{"tasks": tasks}, http.StatusCreated)
	if !strings.HasPrefix(g.ID, "group:"+other+"/") || g.Join != "" {
		t.Fatalf("started %+v, want a group homed in %s without a join", g, other)
	}
	o := a.outcome(t, g.ID, "20s")
	if got := gResults(t, o); !reflect.DeepEqual(got, []int{4, 9}) {
		t.Fatalf("results %v", got)
	}
	if !strings.HasPrefix(o.Outcomes[0].ID, other+"/") || !strings.HasPrefix(o.Outcomes[1].ID, a.queue+"/") {
		t.Fatalf("members %s, %s", o.Outcomes[0].ID, o.Outcomes[1].ID)
	}
}

// TestGroupInvokeAll starts an InvokeAll (concurrency 2) over HTTP.
func TestGroupInvokeAll(t *testing.T) {
	t.Parallel()
	a := newGroupAPI(t, nil)
	a.worker(t)
	g := a.start(t, map[string]any{"queue": a.queue, "tasks": gTasks(1, 2, 3, 4, 5), "concurrency": 2, "retention": "1h"}, http.StatusCreated)
	o := a.outcome(t, g.ID, "20s")
	if !o.Ended || o.State != patterns.GroupSucceeded || o.Total != 5 {
		t.Fatalf("outcome %+v", o)
	}
	if got := gResults(t, o); !reflect.DeepEqual(got, []int{1, 4, 9, 16, 25}) {
		t.Fatalf("results %v", got)
	}
}

// TestGroupDuplicate: a start with the "id" of an existing group adds
// nothing and answers 200 with duplicate true.
func TestGroupDuplicate(t *testing.T) {
	t.Parallel()
	a := newGroupAPI(t, nil)
	body := map[string]any{"id": "g-dup", "queue": a.queue, "tasks": gTasks(1)}
	g := a.start(t, body, http.StatusCreated)
	if g.ID != "group:"+a.queue+"/g-dup" || g.Duplicate {
		t.Fatalf("first start %+v", g)
	}
	g2 := a.start(t, body, http.StatusOK)
	if g2.ID != g.ID || !g2.Duplicate {
		t.Fatalf("second start %+v", g2)
	}
	r := a.do(t, "GET", "/v1/groups/"+a.queue+"/g-dup", nil)
	var p progressView
	r.json(t, &p)
	if r.status != http.StatusOK || p.Total != 1 || p.State != patterns.GroupRunning || p.Ended {
		t.Fatalf("progress %d %s", r.status, r.body)
	}
}

// TestGroupPaths reads a group by every form of its id in the path.
func TestGroupPaths(t *testing.T) {
	t.Parallel()
	a := newGroupAPI(t, nil)
	g := a.start(t, map[string]any{"id": "g1", "queue": a.queue, "tasks": gTasks(1, 2)}, http.StatusCreated)
	for _, p := range []string{
		"/v1/groups/" + a.queue + "/g1",
		"/v1/groups/group:" + a.queue + "/g1",
		"/v1/groups/group:" + a.queue + "%2Fg1",
		"/v1/groups/" + a.queue + "%2Fg1",
	} {
		for _, suffix := range []string{"", "/outcome"} {
			r := a.do(t, "GET", p+suffix, nil)
			var v progressView
			r.json(t, &v)
			if r.status != http.StatusOK || v.ID != g.ID || v.Total != 2 || v.State != patterns.GroupRunning || v.Done != 0 {
				t.Errorf("GET %s: %d %s", p+suffix, r.status, r.body)
			}
		}
	}
	// A group whose own id is "outcome" or "cancel".
	for _, id := range []string{"outcome", "cancel"} {
		g := a.start(t, map[string]any{"id": id, "queue": a.queue, "tasks": gTasks(1)}, http.StatusCreated)
		r := a.do(t, "GET", "/v1/groups/"+a.queue+"/"+id, nil)
		var v progressView
		r.json(t, &v)
		if r.status != http.StatusOK || v.ID != g.ID {
			t.Errorf("GET the group %s: %d %s", g.ID, r.status, r.body)
		}
		r = a.do(t, "GET", "/v1/groups/"+a.queue+"/"+id+"/outcome", nil)
		r.json(t, &v)
		if r.status != http.StatusOK || v.ID != g.ID {
			t.Errorf("GET the outcome of %s: %d %s", g.ID, r.status, r.body)
		}
	}
	if r := a.do(t, "POST", "/v1/groups/"+a.queue+"/cancel", nil); r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST the group whose id is cancel: %d %v %s", r.status, r.header, r.body)
	}
}

// TestGroupWaitAndCancel: an outcome whose wait runs out shows the
// progress without outcomes; a cancel ends the group cancelled, and its
// members show why.
func TestGroupWaitAndCancel(t *testing.T) {
	t.Parallel()
	a := newGroupAPI(t, nil)
	a.worker(t)
	tasks := gTasks(1, 0)
	tasks[1]["args"] = map[string]any{"Block": true}
	g := a.start(t, map[string]any{"queue": a.queue, "tasks": tasks}, http.StatusCreated)
	// The first member ends; the second blocks until cancelled.
	testenv.Eventually(t, 20*time.Second, "the first member to succeed", func() bool {
		r := a.do(t, "GET", "/v1/groups/"+url.PathEscape(g.ID), nil)
		var p progressView
		r.json(t, &p)
		return p.Succeeded == 1
	})
	r := a.do(t, "GET", "/v1/groups/"+url.PathEscape(g.ID)+"/outcome?wait=50ms", nil)
	var o outcomeOfGroup
	r.json(t, &o)
	if r.status != http.StatusOK || o.Ended || o.State != patterns.GroupRunning || o.Outcomes != nil || strings.Contains(string(r.body), "outcomes") {
		t.Fatalf("outcome before the end: %d %s", r.status, r.body)
	}
	r = a.do(t, "POST", "/v1/groups/"+url.PathEscape(g.ID)+"/cancel", nil)
	var p progressView
	r.json(t, &p)
	if r.status != http.StatusOK || p.ID != g.ID || p.Total != 2 {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	o = a.outcome(t, g.ID, "20s")
	if !o.Ended || o.State != patterns.GroupCancelled || len(o.Outcomes) != 2 {
		t.Fatalf("outcome after the cancel: %+v", o)
	}
	if m := o.Outcomes[0]; m.State != client.StateSucceeded || string(m.Result) != "1" {
		t.Errorf("member 0: %+v", m)
	}
	if m := o.Outcomes[1]; m.State != client.StateCancelled || m.Error == "" || m.Result != nil {
		t.Errorf("member 1: %+v", m)
	}
	// Cancelling again changes nothing.
	r = a.do(t, "POST", "/v1/groups/"+a.queue+"/"+strings.TrimPrefix(g.ID, "group:"+a.queue+"/")+"/cancel", nil)
	r.json(t, &p)
	if r.status != http.StatusOK || p.State != patterns.GroupCancelled || !p.Ended {
		t.Fatalf("cancel again: %d %s", r.status, r.body)
	}
}

// TestGroupFailFast: a member that fails ends a fail-fast group failed;
// its outcome shows the member's error and attempt.
func TestGroupFailFast(t *testing.T) {
	t.Parallel()
	a := newGroupAPI(t, nil)
	a.worker(t)
	g := a.start(t, map[string]any{"queue": a.queue, "tasks": gTasks(2, -1), "fail_fast": true, "join": map[string]any{"kind": "g.sum", "args": map[string]any{"Tag": "ff"}}}, http.StatusCreated)
	o := a.outcome(t, g.ID, "20s")
	if !o.Ended || o.State != patterns.GroupFailed || o.Failed < 1 {
		t.Fatalf("outcome %+v", o)
	}
	if m := o.Outcomes[1]; m.State != client.StateDead || m.Error != "permanent: negative" || m.Attempt != 1 || m.Result != nil {
		t.Errorf("member 1: %+v", m)
	}
	if s := a.joinSeen(t, "ff"); s.err == nil {
		t.Errorf("the join read %v without the member's error", s.vals)
	}
}

// TestGroupNestedOutcome reads over HTTP a group started in Go with a
// nested group that failed: the member shows the nested group's error.
func TestGroupNestedOutcome(t *testing.T) {
	t.Parallel()
	a := newGroupAPI(t, nil)
	a.worker(t)
	ctx := gCtx(t)
	q := &client.EnqueueOpts{Queue: a.queue}
	g, err := patterns.ForkJoin(ctx, a.c, []client.Spec{
		{Args: gSquare{N: 3}, Opts: q},
		patterns.Sub([]client.Spec{{Args: gSquare{N: -1}, Opts: q}, {Args: gSquare{N: 1}, Opts: q}}, nil, nil),
	}, nil, &patterns.GroupOpts{Queue: a.queue})
	if err != nil {
		t.Fatal(err)
	}
	o := a.outcome(t, g.ID(), "20s")
	if !o.Ended || o.State != patterns.GroupFailed || len(o.Outcomes) != 2 {
		t.Fatalf("outcome %+v", o)
	}
	if m := o.Outcomes[0]; m.State != client.StateSucceeded || string(m.Result) != "9" {
		t.Errorf("member 0: %+v", m)
	}
	m := o.Outcomes[1]
	if m.State != client.StateDead || !strings.HasPrefix(m.ID, "group:") || !strings.Contains(m.Error, "1 of 2 members did not succeed") || m.Result != nil {
		t.Errorf("member 1 (the nested group): %+v", m)
	}
}

// TestGroupRefused has a case for each refusal of the group routes: its
// status and the field it names.
func TestGroupRefused(t *testing.T) {
	t.Parallel()
	a := newGroupAPI(t, func(c *Config) {
		c.MaxBatchTasks = 3
		c.MaxBatchBytes = 4 << 10
		c.MaxPayloadBytes = 64
	})
	q := a.queue
	task := func(extra ...any) map[string]any {
		m := map[string]any{"kind": "g.square"}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i].(string)] = extra[i+1]
		}
		return m
	}
	ok := task()
	body := func(extra ...any) map[string]any {
		m := map[string]any{"queue": q, "tasks": []any{ok}}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i].(string)] = extra[i+1]
		}
		return m
	}
	existing := a.start(t, body("id", "g-there"), http.StatusCreated)
	cases := []struct {
		name   string
		method string
		path   string
		body   any
		ctype  string
		status int
		field  string
	}{
		{"malformed JSON", "POST", "/v1/groups", `{"tasks": [`, "", 400, ""},
		{"not an object", "POST", "/v1/groups", `[]`, "", 400, ""},
		{"unknown field", "POST", "/v1/groups", body("bogus", 1), "", 400, "bogus"},
		{"member unknown field", "POST", "/v1/groups", body("tasks", []any{ok, task("bogus", 1)}), "", 400, "tasks[1].bogus"},
		{"member not an object", "POST", "/v1/groups", body("tasks", []any{ok, 7}), "", 400, "tasks[1]"},
		{"no tasks", "POST", "/v1/groups", map[string]any{"queue": q}, "", 400, "tasks"},
		{"empty tasks", "POST", "/v1/groups", body("tasks", []any{}), "", 400, "tasks"},
		{"member without kind", "POST", "/v1/groups", body("tasks", []any{ok, map[string]any{"args": 1}}), "", 400, "tasks[1].kind"},
		{"member bad kind", "POST", "/v1/groups", body("tasks", []any{task("kind", "a b")}), "", 400, "tasks[0].kind"},
		{"member without queue", "POST", "/v1/groups", map[string]any{"tasks": []any{ok}}, "", 400, "tasks[0].queue"},
		{"member bad queue", "POST", "/v1/groups", map[string]any{"tasks": []any{task("queue", "a/b")}}, "", 400, "tasks[0].queue"},
		{"member with id", "POST", "/v1/groups", body("tasks", []any{ok, task("id", "m1")}), "", 400, "tasks[1].id"},
		{"member bad delay", "POST", "/v1/groups", body("tasks", []any{task("delay", "soon")}), "", 400, "tasks[0].delay"},
		{"member bad args", "POST", "/v1/groups", body("tasks", []any{task("args", map[string]any{"b": map[string]any{"$bytes": "!!"}})}), "", 400, "tasks[0].args.b"},
		{"join with id", "POST", "/v1/groups", body("join", task("id", "j1")), "", 400, "join.id"},
		{"join without kind", "POST", "/v1/groups", body("join", map[string]any{}), "", 400, "join.kind"},
		{"join unknown field", "POST", "/v1/groups", body("join", task("bogus", true)), "", 400, "join.bogus"},
		{"join with concurrency", "POST", "/v1/groups", body("join", ok, "concurrency", 2), "", 400, "join"},
		{"negative concurrency", "POST", "/v1/groups", body("concurrency", -1), "", 400, "concurrency"},
		{"concurrency not a number", "POST", "/v1/groups", body("concurrency", "2"), "", 400, "concurrency"},
		{"bad group id", "POST", "/v1/groups", body("id", "a/b"), "", 400, "id"},
		{"group id too long", "POST", "/v1/groups", body("id", strings.Repeat("g", 101)), "", 400, "id"},
		{"bad group queue", "POST", "/v1/groups", body("queue", "a b"), "", 400, "queue"},
		{"bad retention", "POST", "/v1/groups", body("retention", "forever"), "", 400, "retention"},
		{"retention under 1ms", "POST", "/v1/groups", body("retention", "10us"), "", 400, "retention"},
		{"too many tasks", "POST", "/v1/groups", body("tasks", []any{ok, ok, ok, ok}), "", 413, "tasks"},
		{"body too large", "POST", "/v1/groups", body("tasks", []any{task("args", strings.Repeat("x", 5<<10))}), "", 413, ""},
		{"member args too large", "POST", "/v1/groups", body("tasks", []any{ok, task("args", strings.Repeat("x", 100))}), "", 413, "tasks[1].args"},
		{"not JSON", "POST", "/v1/groups", `{}`, "text/plain", 415, ""},
		{"bad id in path", "GET", "/v1/groups/" + q + "%2Fa%2Fb", nil, "", 400, "id"},
		{"id without slash in path", "GET", "/v1/groups/" + q, nil, "", 400, "id"},
		{"bad home in path", "GET", "/v1/groups/a%20b/g1", nil, "", 400, "id"},
		{"own id too long in path", "GET", "/v1/groups/" + q + "/" + strings.Repeat("g", 101), nil, "", 400, "id"},
		{"bad wait", "GET", "/v1/groups/" + url.PathEscape(existing.ID) + "/outcome?wait=soon", nil, "", 400, "wait"},
		{"negative wait", "GET", "/v1/groups/" + url.PathEscape(existing.ID) + "/outcome?wait=-1s", nil, "", 400, "wait"},
		{"bad id to cancel", "POST", "/v1/groups/" + q + "%2Fa%2Fb/cancel", nil, "", 400, "id"},
		{"unknown group", "GET", "/v1/groups/" + q + "/nope", nil, "", 404, ""},
		{"unknown group outcome", "GET", "/v1/groups/" + q + "/nope/outcome?wait=1s", nil, "", 404, ""},
		{"unknown group cancel", "POST", "/v1/groups/" + q + "/nope/cancel", nil, "", 404, ""},
		{"wrong method", "GET", "/v1/groups", nil, "", 405, ""},
		{"wrong method on a group", "DELETE", "/v1/groups/" + url.PathEscape(existing.ID), nil, "", 405, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var hdr []string
			if c.ctype != "" {
				hdr = []string{"Content-Type", c.ctype}
			}
			r := a.do(t, c.method, c.path, c.body, hdr...)
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			if f := r.field(t); f != c.field {
				t.Fatalf("field %q, want %q: %s", f, c.field, r.body)
			}
			if c.status == 405 && r.header.Get("Allow") == "" {
				t.Fatalf("405 without Allow")
			}
		})
	}
}

// TestGroupAuth: with tokens, a start needs a token allowing the home
// queue, every member's and the join's (403 names the first that is not);
// reads and cancels need the home queue.
func TestGroupAuth(t *testing.T) {
	t.Parallel()
	queue := testenv.Queue(t)
	other := queue + "-b"
	a := newGroupAPI(t, func(c *Config) {
		c.Tokens = []Token{
			{Name: "all", Secret: "s-all"},
			{Name: "home", Secret: "s-home", Queues: []string{queue}},
			{Name: "other", Secret: "s-other", Queues: []string{other}},
		}
	})
	bearer := func(s string) []string { return []string{"Authorization", "Bearer " + s} }
	in := func(q string) map[string]any { return map[string]any{"kind": "g.square", "queue": q} }
	group := map[string]any{"id": "ga", "queue": queue, "tasks": []any{in(queue)}}
	r := a.do(t, "POST", "/v1/groups", group, bearer("s-home")...)
	if r.status != http.StatusCreated {
		t.Fatalf("start with the home queue's token: %d %s", r.status, r.body)
	}
	gid := url.PathEscape("group:" + queue + "/ga")
	cases := []struct {
		name   string
		method string
		path   string
		body   any
		header []string
		status int
		field  string
	}{
		{"no token", "POST", "/v1/groups", group, nil, 401, ""},
		{"unknown token", "POST", "/v1/groups", group, bearer("nope"), 401, ""},
		{"not a bearer", "GET", "/v1/groups/" + gid, nil, []string{"Authorization", "Basic czphbGw="}, 401, ""},
		{"home not allowed", "POST", "/v1/groups", group, bearer("s-other"), 403, "queue"},
		{"first member's home not allowed", "POST", "/v1/groups", map[string]any{"tasks": []any{in(queue), in(other)}}, bearer("s-other"), 403, "tasks[0].queue"},
		{"member not allowed", "POST", "/v1/groups", map[string]any{"queue": queue, "tasks": []any{in(queue), in(other)}}, bearer("s-home"), 403, "tasks[1].queue"},
		{"join not allowed", "POST", "/v1/groups", map[string]any{"queue": queue, "tasks": []any{in(queue)}, "join": in(other)}, bearer("s-home"), 403, "join.queue"},
		{"read not allowed", "GET", "/v1/groups/" + gid, nil, bearer("s-other"), 403, "queue"},
		{"outcome not allowed", "GET", "/v1/groups/" + gid + "/outcome", nil, bearer("s-other"), 403, "queue"},
		{"cancel not allowed", "POST", "/v1/groups/" + gid + "/cancel", nil, bearer("s-other"), 403, "queue"},
		{"read without token", "GET", "/v1/groups/" + gid, nil, nil, 401, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := a.do(t, c.method, c.path, c.body, c.header...)
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			if f := r.field(t); f != c.field {
				t.Fatalf("field %q, want %q: %s", f, c.field, r.body)
			}
			if c.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 with WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
			}
		})
	}
	// Allowed: every queue of the group, and the reads of its home.
	r = a.do(t, "POST", "/v1/groups", map[string]any{"queue": queue, "tasks": []any{in(queue), in(other)}, "join": in(other)}, bearer("s-all")...)
	if r.status != http.StatusCreated {
		t.Fatalf("start with the token of every queue: %d %s", r.status, r.body)
	}
	for _, p := range []string{"/v1/groups/" + gid, "/v1/groups/" + gid + "/outcome"} {
		if r := a.do(t, "GET", p, nil, bearer("s-home")...); r.status != http.StatusOK {
			t.Errorf("GET %s with the home's token: %d %s", p, r.status, r.body)
		}
	}
	if r := a.do(t, "POST", "/v1/groups/"+gid+"/cancel", nil, bearer("s-home")...); r.status != http.StatusOK {
		t.Errorf("cancel with the home's token: %d %s", r.status, r.body)
	}

	// A group at home with a member or the join in another queue: the
	// home's token may read its counts, but neither cancel it (the cancel
	// reaches every member) nor read its members' outcomes.
	for _, c := range []struct {
		id, what string
		body     map[string]any
	}{
		{"gm", "a member", map[string]any{"id": "gm", "queue": queue, "tasks": []any{in(queue), in(other)}}},
		{"gj", "the join", map[string]any{"id": "gj", "queue": queue, "tasks": []any{in(queue)}, "join": in(other)}},
	} {
		if r := a.do(t, "POST", "/v1/groups", c.body, bearer("s-all")...); r.status != http.StatusCreated {
			t.Fatalf("start %s: %d %s", c.id, r.status, r.body)
		}
		p := "/v1/groups/" + url.PathEscape("group:"+queue+"/"+c.id)
		forbidden := func(what string, r gReply) {
			t.Helper()
			var e struct{ Error string }
			r.json(t, &e)
			if r.status != http.StatusForbidden || r.field(t) != "queue" || !strings.Contains(e.Error, strconv.Quote(other)) {
				t.Errorf("%s of a group with %s in another queue, with the home's token: %d %s (want 403 naming %q)", what, c.what, r.status, r.body, other)
			}
		}
		if r := a.do(t, "GET", p, nil, bearer("s-home")...); r.status != http.StatusOK {
			t.Errorf("progress of %s with the home's token: %d %s", c.id, r.status, r.body)
		}
		forbidden("cancel", a.do(t, "POST", p+"/cancel", nil, bearer("s-home")...))
		var pv progressView
		r := a.do(t, "GET", p, nil, bearer("s-all")...)
		if r.json(t, &pv); pv.State != patterns.GroupRunning {
			t.Fatalf("%s after the refused cancel: %s, want running", c.id, r.body)
		}
		if r := a.do(t, "POST", p+"/cancel", nil, bearer("s-all")...); r.status != http.StatusOK {
			t.Fatalf("cancel %s with the token of every queue: %d %s", c.id, r.status, r.body)
		}
		r = a.do(t, "GET", p+"/outcome?wait=20s", nil, bearer("s-all")...)
		if r.json(t, &pv); !pv.Ended {
			t.Fatalf("%s did not end after its cancel: %s", c.id, r.body)
		}
		forbidden("outcome", a.do(t, "GET", p+"/outcome", nil, bearer("s-home")...))
	}
}

// TestGroupRedisDown: with Redis unreachable, a start and a read are 503
// with Retry-After.
func TestGroupRedisDown(t *testing.T) {
	t.Parallel()
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: 1})
	t.Cleanup(func() { _ = rdb.Close() })
	c, err := client.New(context.Background(), rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	h, err := New(Config{Client: c, Inspector: inspect.New(rdb)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	a := &gAPI{srv: srv}
	m.Close()
	for _, c := range []struct{ method, path string }{
		{"POST", "/v1/groups"},
		{"GET", "/v1/groups/q/g1"},
		{"GET", "/v1/groups/q/g1/outcome?wait=1s"},
		{"POST", "/v1/groups/q/g1/cancel"},
	} {
		var body any
		if c.path == "/v1/groups" {
			body = map[string]any{"id": "g1", "queue": "q", "tasks": gTasks(1)}
		}
		r := a.do(t, c.method, c.path, body)
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
			t.Errorf("%s %s: %d %v %s", c.method, c.path, r.status, r.header, r.body)
		}
		r.field(t)
	}
}

// TestGroupIncomplete: a group made but not completed is a 503 that
// names the id to send the request again with.
func TestGroupIncomplete(t *testing.T) {
	t.Parallel()
	s := &server{log: slog.New(slog.DiscardHandler)}
	req := httptest.NewRequest("POST", "/v1/groups", nil)
	e := s.groupFailed(req, fmt.Errorf("wrapped: %w", &patterns.IncompleteError{ID: "gabc", Group: "group:q/gabc", Err: errors.New("patterns.ForkJoin: EOF")}))
	if e.Status != http.StatusServiceUnavailable || e.RetryAfter <= 0 || !strings.Contains(e.Msg, `"id": "gabc"`) || !strings.Contains(e.Msg, "group:q/gabc") {
		t.Fatalf("%+v", e)
	}
}

// TestGroupMemberResultUnreadable: a member's result that is not msgpack
// the gate takes is a 500 naming the member, never passed on.
func TestGroupMemberResultUnreadable(t *testing.T) {
	t.Parallel()
	_, e := memberOf(patterns.Outcome{ID: "q/k", State: client.StateSucceeded, Result: []byte{0xc1}})
	if e == nil || e.Status != http.StatusInternalServerError || !strings.Contains(e.Msg, `"q/k"`) {
		t.Fatalf("%+v", e)
	}
	m, e := memberOf(patterns.Outcome{ID: "group:q/g.1", State: client.StateSucceeded})
	if e != nil || string(m.Result) != "null" {
		t.Fatalf("a nested group that succeeded: %+v %v", m, e)
	}
}
