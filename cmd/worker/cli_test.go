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

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/asynctest"
	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// Echo is what the CLI test enqueues from JSON.
type Echo struct {
	N    int  `msgpack:"n"`
	Fail bool `msgpack:"fail"`
}

func (Echo) Kind() string { return "cli.echo" }

// The operator commands end to end: enqueue from JSON, inspect, cancel,
// retry and purge a dead task, list queues, repeats and a group.
func TestCLI(t *testing.T) {
	e := asynctest.Redis(t)
	if os.Getenv(asynctest.EnvCluster) != "" {
		e = asynctest.IsolatedRedis(t, 0) // the commands take one server's URL
	}
	queue := asynctest.Queue(t)
	url := "redis://" + e.Addr
	asynctest.StartWorker(t, e.RDB, queue, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Echo) (int, error) {
			if a.Fail {
				return 0, worker.Permanent(errors.New("asked to fail"))
			}
			return a.N * 2, nil
		})
	}, false)
	cmd := func(want int, args ...string) string {
		t.Helper()
		var out, errb syncBuf
		n := 1
		if args[0] == "task" || args[0] == "dead" || args[0] == "repeats" {
			n = min(2, len(args)) // the subcommand goes before the flags
		}
		args = append(append(append([]string{}, args[:n]...), "-redis", url), args[n:]...)
		if code := runCLI(args, &out, &errb, func(string) string { return "" }); code != want {
			t.Fatalf("worker %v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, want, out.String(), errb.String())
		}
		return strings.TrimSpace(out.String())
	}
	jsonOf := func(s string) map[string]any {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, s)
		}
		return m
	}
	waitState := func(id, want string) map[string]any {
		t.Helper()
		var m map[string]any
		asynctest.Eventually(t, 10*time.Second, id+" "+want, func() bool {
			m = jsonOf(cmd(0, "task", "show", id, "-json"))
			return m["state"] == want
		})
		return m
	}

	id := cmd(0, "enqueue", "-kind", "cli.echo", "-queue", queue, `{"n": 21}`)
	if m := waitState(id, "succeeded"); m["result"] != float64(42) {
		t.Errorf("result %v, want 42", m["result"])
	}

	later := cmd(0, "enqueue", "-kind", "cli.echo", "-queue", queue, "-delay", "1h", `{"n": 1}`)
	if m := jsonOf(cmd(0, "task", "cancel", later, "-json")); m["state"] != "cancelled" {
		t.Errorf("cancel: %v", m)
	}

	bad := cmd(0, "enqueue", "-kind", "cli.echo", "-queue", queue, "-id", "bad-1", `{"n": 1, "fail": true}`)
	waitState(bad, "dead")
	var dead []map[string]any
	if err := json.Unmarshal([]byte(cmd(0, "dead", "list", queue, "-json")), &dead); err != nil || len(dead) != 1 || dead[0]["ID"] != bad {
		t.Fatalf("dead list: %v, %v", dead, err)
	}
	cmd(0, "dead", "retry", bad)
	asynctest.Eventually(t, 10*time.Second, "the retried task to die again", func() bool {
		m := jsonOf(cmd(0, "task", "show", bad, "-json"))
		return m["state"] == "dead"
	})
	cmd(0, "dead", "purge", bad)
	cmd(1, "task", "show", bad)

	var qs []map[string]any
	if err := json.Unmarshal([]byte(cmd(0, "queues", "-json")), &qs); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, q := range qs {
		found = found || q["queue"] == queue
	}
	if !found {
		t.Errorf("queues does not list %s", queue)
	}

	c := asynctest.Client(t, e)
	ctx := context.Background()
	g, err := patterns.ForkJoin(ctx, c, []client.Spec{{Args: Echo{N: 1}, Opts: &client.EnqueueOpts{Queue: queue}}, {Args: Echo{N: 2}, Opts: &client.EnqueueOpts{Queue: queue}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if m := jsonOf(cmd(0, "group", g.ID(), "-json")); m["state"] != string(patterns.GroupSucceeded) || m["succeeded"] != float64(2) {
		t.Errorf("group: %v", m)
	}
	if _, err := patterns.Repeat(ctx, c, "cli-"+queue[len(queue)-8:], client.Spec{Args: Echo{}, Opts: &client.EnqueueOpts{Queue: queue}}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if out := cmd(0, "repeats", "list"); !strings.Contains(out, "cli-"+queue[len(queue)-8:]) {
		t.Errorf("repeats list:\n%s", out)
	}
	cmd(0, "repeats", "remove", "cli-"+queue[len(queue)-8:])
	cmd(1, "repeats", "remove", "cli-"+queue[len(queue)-8:])

	for _, args := range [][]string{{"task"}, {"task", "explode"}, {"dead", "list"}} {
		if code := runCLI(args, io.Discard, io.Discard, func(string) string { return "" }); code != 2 {
			t.Errorf("worker %v: exit %d, want 2 (usage)", args, code)
		}
	}
	cmd(2, "enqueue", `{}`)
	cmd(1, "enqueue", "-kind", "x", "not json")
}

// `task show` decodes the result and args it reads from Redis through the
// codec gate: six bytes that announce an array of 2^32-1 elements are
// reported as undecodable, where a raw msgpack decode tried to allocate the
// array and the process died of "runtime: out of memory".
func TestCLITaskShowMalformed(t *testing.T) {
	e := asynctest.Redis(t)
	if os.Getenv(asynctest.EnvCluster) != "" {
		e = asynctest.IsolatedRedis(t, 0) // the commands take one server's URL
	}
	queue := asynctest.Queue(t)
	q := keys.ForQueue(queue)
	ctx := context.Background()
	hostile := []byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0}
	asynctest.StartWorker(t, e.RDB, queue, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Echo) (int, error) { return a.N * 2, nil })
	}, false)
	c := asynctest.Client(t, e)
	show := func(id string) (map[string]any, string) {
		t.Helper()
		var out, errb syncBuf
		if code := runCLI([]string{"task", "show", "-redis", "redis://" + e.Addr, "-json", id}, &out, &errb, func(string) string { return "" }); code != 1 {
			t.Fatalf("task show %s: exit %d, want 1\nstdout: %s\nstderr: %s", id, code, out.String(), errb.String())
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(out.String()), &m); err != nil {
			t.Fatalf("task show %s: stdout is not JSON: %v\n%s", id, err, out.String())
		}
		return m, errb.String()
	}

	// A succeeded task whose stored result is then replaced by the hostile
	// bytes (the record's first four lines are kept).
	h, err := c.Enqueue(ctx, Echo{N: 21}, &client.EnqueueOpts{Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Result[int](ctx, h); err != nil {
		t.Fatal(err)
	}
	key := strings.TrimPrefix(h.ID(), queue+"/")
	rec, err := e.RDB.Get(ctx, q.Result(key)).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	head := rec
	for range 4 {
		i := bytes.IndexByte(head, '\n')
		if i < 0 {
			t.Fatalf("result record %q has fewer than four lines", rec)
		}
		head = head[i+1:]
	}
	rec = append(rec[:len(rec)-len(head):len(rec)-len(head)], hostile...)
	if err := e.RDB.Set(ctx, q.Result(key), rec, time.Hour).Err(); err != nil {
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

	// A delayed task whose args are replaced by the same bytes in its
	// envelope.
	later, err := c.Enqueue(ctx, Echo{N: 1}, &client.EnqueueOpts{Queue: queue, Delay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tk := q.Task(strings.TrimPrefix(later.ID(), queue+"/"))
	raw, err := e.RDB.HGet(ctx, tk, "m").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	env, err := codec.DecodeEnvelope(raw)
	if err != nil {
		t.Fatal(err)
	}
	env.Payload = hostile
	if err := e.RDB.HSet(ctx, tk, "m", codec.AppendEnvelope(nil, env)).Err(); err != nil {
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
