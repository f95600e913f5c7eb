package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// Echo is what the CLI test enqueues from JSON.
type Echo struct {
	N    int  `msgpack:"n"`
	Fail bool `msgpack:"fail"`
}

func (Echo) Kind() string { return "cli.echo" }

// target is the Redis the commands of a test talk to, and the environment
// that names it: REDIS_URL of one server, or REDIS_CLUSTER_ADDRS in the
// cluster pass (so that the commands run on a cluster as well).
type target struct {
	*testenv.Env
	env map[string]string
}

func cliTarget(t *testing.T) *target {
	t.Helper()
	e := testenv.Redis(t)
	if c := os.Getenv(testenv.EnvCluster); c != "" {
		return &target{Env: e, env: map[string]string{"REDIS_CLUSTER_ADDRS": c}}
	}
	return &target{Env: e, env: map[string]string{"REDIS_URL": "redis://" + e.Addr}}
}

func (tg *target) getenv(k string) string { return tg.env[k] }

// run runs the command args with stdin and returns its exit code, stdout
// and stderr.
func (tg *target) run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb syncBuf
	var in io.Reader
	if stdin != "" {
		in = strings.NewReader(stdin)
	}
	code := runCLIContext(context.Background(), args, in, &out, &errb, tg.getenv)
	return code, out.String(), errb.String()
}

// cmd runs args, wants exit code want, and returns stdout, trimmed.
func (tg *target) cmd(t *testing.T, want int, args ...string) string {
	t.Helper()
	code, out, errs := tg.run(t, "", args...)
	if code != want {
		t.Fatalf("worker %v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, want, out, errs)
	}
	return strings.TrimSpace(out)
}

func jsonOf[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, s)
	}
	return v
}

// The operator commands end to end: enqueue from JSON, inspect, cancel,
// retry and purge a dead task, list queues, repeats and a group.
func TestCLI(t *testing.T) {
	tg := cliTarget(t)
	queue := testenv.Queue(t)
	testenv.StartWorker(t, tg.RDB, queue, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Echo) (int, error) {
			if a.Fail {
				return 0, worker.Permanent(errors.New("asked to fail"))
			}
			return a.N * 2, nil
		})
	}, false)
	waitState := func(id, want string) map[string]any {
		t.Helper()
		var m map[string]any
		testenv.Eventually(t, 10*time.Second, id+" "+want, func() bool {
			m = jsonOf[map[string]any](t, tg.cmd(t, 0, "task", "show", id, "-json"))
			return m["state"] == want
		})
		return m
	}

	id := tg.cmd(t, 0, "enqueue", queue, "cli.echo", "-args", `{"n": 21}`)
	if m := waitState(id, "succeeded"); m["result"] != float64(42) {
		t.Errorf("result %v, want 42", m["result"])
	}

	later := tg.cmd(t, 0, "enqueue", queue, "cli.echo", "-delay", "1h", "-args", `{"n": 1}`)
	if m := jsonOf[map[string]any](t, tg.cmd(t, 0, "task", "cancel", later, "-json")); m["state"] != "cancelled" {
		t.Errorf("cancel: %v", m)
	}

	bad := tg.cmd(t, 0, "enqueue", queue, "cli.echo", "-id", "bad-1", "-args", `{"n": 1, "fail": true}`)
	waitState(bad, "dead")
	dead := jsonOf[struct {
		Tasks []map[string]any `json:"tasks"`
	}](t, tg.cmd(t, 0, "dead", "list", queue, "-json"))
	if len(dead.Tasks) != 1 || dead.Tasks[0]["id"] != bad {
		t.Fatalf("dead list: %v", dead)
	}
	tg.cmd(t, 0, "dead", "retry", bad)
	testenv.Eventually(t, 10*time.Second, "the retried task to die again", func() bool {
		m := jsonOf[map[string]any](t, tg.cmd(t, 0, "task", "show", bad, "-json"))
		return m["state"] == "dead"
	})
	tg.cmd(t, 0, "dead", "purge", bad)
	tg.cmd(t, 1, "task", "show", bad)

	qs := jsonOf[[]map[string]any](t, tg.cmd(t, 0, "queues", "-json"))
	found := false
	for _, q := range qs {
		found = found || q["queue"] == queue
	}
	if !found {
		t.Errorf("queues does not list %s", queue)
	}

	c := testenv.Client(t, tg.Env)
	ctx := context.Background()
	g, err := patterns.ForkJoin(ctx, c, []client.Spec{{Args: Echo{N: 1}, Opts: &client.EnqueueOpts{Queue: queue}}, {Args: Echo{N: 2}, Opts: &client.EnqueueOpts{Queue: queue}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if m := jsonOf[map[string]any](t, tg.cmd(t, 0, "group", g.ID(), "-json")); m["state"] != string(patterns.GroupSucceeded) || m["succeeded"] != float64(2) {
		t.Errorf("group: %v", m)
	}
	name := "cli-" + queue[len(queue)-8:]
	if _, err := patterns.Repeat(ctx, c, name, client.Spec{Args: Echo{}, Opts: &client.EnqueueOpts{Queue: queue}}, time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"repeats", "list"}, {"repeats"}} {
		if out := tg.cmd(t, 0, args...); !strings.Contains(out, name) {
			t.Errorf("%v:\n%s", args, out)
		}
	}
	tg.cmd(t, 0, "repeats", "remove", name)
	tg.cmd(t, 1, "repeats", "remove", name)

	for _, args := range [][]string{{"task"}, {"task", "explode"}, {"dead", "list"}, {"nosuch"}, {"tasks", queue},
		{"tasks", queue, "-state", "gone"}, {"queues", "extra"}, {"enqueue", queue}, {"queues", "-nosuchflag"}} {
		if code, _, _ := tg.run(t, "", args...); code != 2 {
			t.Errorf("worker %v: exit %d, want 2 (usage)", args, code)
		}
	}
	tg.cmd(t, 1, "enqueue", queue, "x", "-args", "not json")
}

// hostile is six bytes of msgpack that announce an array of 2^32-1
// elements.
var hostile = []byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0}

// Raw is args (or a result) whose msgpack is given bytes, as they are.
type Raw struct{ b []byte }

func (Raw) Kind() string                               { return "cli.raw" }
func (r Raw) EncodeMsgpack(enc *msgpack.Encoder) error { return enc.Encode(msgpack.RawMessage(r.b)) }

// `task show` decodes the result and args it reads from Redis through the
// codec gate: six bytes that announce an array of 2^32-1 elements are
// reported as undecodable, where a raw msgpack decode tried to allocate the
// array and the process died of "runtime: out of memory".
func TestCLITaskShowMalformed(t *testing.T) {
	tg := cliTarget(t)
	queue := testenv.Queue(t)
	ctx := context.Background()
	testenv.StartWorker(t, tg.RDB, queue, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Echo) (Raw, error) { return Raw{hostile}, nil })
	}, false)
	c := testenv.Client(t, tg.Env)
	show := func(id string) (map[string]any, string) {
		t.Helper()
		code, out, errs := tg.run(t, "", "task", "show", "-json", id)
		if code != 1 {
			t.Fatalf("task show %s: exit %d, want 1\nstdout: %s\nstderr: %s", id, code, out, errs)
		}
		return jsonOf[map[string]any](t, out), errs
	}

	// A succeeded task whose handler's result is the hostile bytes.
	h, err := c.Enqueue(ctx, Echo{N: 21}, &client.EnqueueOpts{Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	m, stderr := show(h.ID())
	if m["state"] != "succeeded" || m["result_bytes"] != float64(len(hostile)) || !strings.Contains(fmt.Sprint(m["result_error"]), "4294967295 elements") {
		t.Errorf("task show of a malformed result: %v", m)
	}
	if _, ok := m["result"]; ok {
		t.Errorf("task show decoded a malformed result: %v", m["result"])
	}
	if want := "cannot decode its result (6 bytes)"; !strings.Contains(stderr, want) {
		t.Errorf("stderr %q does not say %q", stderr, want)
	}

	// A delayed task whose args are the same bytes.
	later, err := c.Enqueue(ctx, Raw{hostile}, &client.EnqueueOpts{Queue: queue, Delay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	m, stderr = show(later.ID())
	if m["state"] != "scheduled" || m["args_bytes"] != float64(len(hostile)) || !strings.Contains(fmt.Sprint(m["args_error"]), "4294967295 elements") {
		t.Errorf("task show of malformed args: %v", m)
	}
	if want := "cannot decode its args (6 bytes)"; !strings.Contains(stderr, want) {
		t.Errorf("stderr %q does not say %q", stderr, want)
	}
}

// Shown is args (and a result) whose msgpack map has its keys out of
// alphabetical order and holds binary.
type Shown struct {
	Zed   int    `msgpack:"zed"`
	Data  []byte `msgpack:"data"`
	Alpha string `msgpack:"alpha"`
}

func (Shown) Kind() string { return "cli.shown" }

// `task show` prints args and results by the JSON rule of docs/wire.md, as
// the inspector (the dashboard) and the HTTP API do: keys in the order
// they were encoded, binary as {"$bytes": ...}. It printed them sorted,
// with binary as a bare base64 string.
func TestCLITaskShowJSONRule(t *testing.T) {
	tg := cliTarget(t)
	queue := testenv.Queue(t)
	ctx := context.Background()
	testenv.StartWorker(t, tg.RDB, queue, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Shown) (Shown, error) {
			return Shown{Zed: a.Zed * 2, Data: append(a.Data, 3), Alpha: a.Alpha + "b"}, nil
		})
	}, false)
	c := testenv.Client(t, tg.Env)
	in := inspect.New(tg.RDB)
	const (
		wantArgs   = `{"zed":1,"data":{"$bytes":"AQI="},"alpha":"a"}`
		wantResult = `{"zed":2,"data":{"$bytes":"AQID"},"alpha":"ab"}`
	)
	later, err := c.Enqueue(ctx, Shown{Zed: 1, Data: []byte{1, 2}, Alpha: "a"}, &client.EnqueueOpts{Queue: queue, Delay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	done, err := c.Enqueue(ctx, Shown{Zed: 1, Data: []byte{1, 2}, Alpha: "a"}, &client.EnqueueOpts{Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := done.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id, field, want string
	}{{later.ID(), "args", wantArgs}, {done.ID(), "result", wantResult}} {
		ti, err := in.Task(ctx, c.id)
		if err != nil {
			t.Fatal(err)
		}
		inspected := ti.Args
		if c.field == "result" {
			inspected = ti.Result
		}
		if string(inspected) != c.want {
			t.Fatalf("the inspector's %s: %s, want %s", c.field, inspected, c.want)
		}
		var shown map[string]json.RawMessage
		if err := json.Unmarshal([]byte(tg.cmd(t, 0, "task", "show", c.id, "-json")), &shown); err != nil {
			t.Fatal(err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, shown[c.field]); err != nil {
			t.Fatal(err)
		}
		if compact.String() != c.want {
			t.Errorf("task show %s -json: %s %s, want %s", c.id, c.field, compact.String(), c.want)
		}
		text := tg.cmd(t, 0, "task", "show", c.id)
		found := false
		for _, l := range strings.Split(text, "\n") {
			if k, v, ok := strings.Cut(l, " "); ok && k == c.field {
				found = strings.TrimSpace(v) == c.want
			}
		}
		if !found {
			t.Errorf("task show %s: no line %q in\n%s", c.id, c.field+" "+c.want, text)
		}
	}
}
