package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/upload"
)

// The commands reach a Redis Cluster named by -redis-cluster alone (the
// environment names no Redis): the 6-master cluster of the cluster pass
// (ASYNC_REDIS_CLUSTER), else a miniredis, which answers CLUSTER SLOTS as a
// cluster of one node. Enqueue, queues, tasks, queue pause and resume,
// and queue delete, each checked against what a cluster client of the
// test reads.
func TestCLIClusterFlag(t *testing.T) {
	addrs := os.Getenv(testenv.EnvCluster)
	if addrs == "" {
		addrs = miniredis.RunT(t).Addr()
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ","), ContextTimeoutEnabled: true})
	defer rdb.Close()
	in := inspect.New(rdb)
	ctx := context.Background()
	tg := &target{env: map[string]string{}}
	run := func(name []string, args ...string) string {
		t.Helper()
		return tg.cmd(t, 0, append(append(append([]string(nil), name...), "-redis-cluster", addrs), args...)...)
	}
	queue := testenv.Queue(t)

	enq := jsonOf[map[string]any](t, run([]string{"enqueue"}, "-json", queue, "cli.echo", "-args", `{"n": 7}`))
	id, _ := enq["id"].(string)
	if !strings.HasPrefix(id, queue+"/") || enq["duplicate"] != false {
		t.Fatalf("enqueue: %v", enq)
	}
	if ti, err := in.Task(ctx, id); err != nil || ti.State != inspect.StateWaiting || ti.Kind != "cli.echo" || string(ti.Args) != `{"n":7}` {
		t.Fatalf("the cluster has task %s as %+v (%v), want it waiting, kind cli.echo, args {\"n\":7}", id, ti, err)
	}

	row := func() queueRow {
		t.Helper()
		for _, r := range jsonOf[[]queueRow](t, run([]string{"queues"}, "-json")) {
			if r.Queue == queue {
				return r
			}
		}
		t.Fatalf("queues does not list %s", queue)
		return queueRow{}
	}
	if r := row(); r.Waiting != 1 || r.Running != 0 || r.Scheduled != 0 || r.Dead != 0 || r.Paused {
		t.Errorf("queues: %+v, want 1 waiting, not paused", r.QueueInfo)
	}

	type taskPage struct {
		Tasks []struct {
			ID    string          `json:"id"`
			Kind  string          `json:"kind"`
			State string          `json:"state"`
			Args  json.RawMessage `json:"args"`
		} `json:"tasks"`
		Next string `json:"next"`
	}
	page := jsonOf[taskPage](t, run([]string{"tasks"}, "-json", "-state", "waiting", queue))
	if len(page.Tasks) != 1 || page.Next != "" {
		t.Fatalf("tasks: %+v, want the one task", page)
	}
	var args bytes.Buffer
	if x := page.Tasks[0]; x.ID != id || x.Kind != "cli.echo" || x.State != "waiting" || json.Compact(&args, x.Args) != nil || args.String() != `{"n":7}` {
		t.Errorf("tasks: %+v (args %s), want %s waiting, kind cli.echo, args {\"n\":7}", x, x.Args, id)
	}
	if text := run([]string{"tasks"}, "-state", "waiting", queue); !strings.Contains(text, id) {
		t.Errorf("tasks, text, does not list %s:\n%s", id, text)
	}

	for _, step := range []struct {
		cmd    string
		paused bool
	}{{"pause", true}, {"resume", false}} {
		out := jsonOf[map[string]string](t, run([]string{"queue", step.cmd}, "-json", queue))
		if want := step.cmd + "d"; out["queue"] != queue || out["state"] != want {
			t.Errorf("queue %s: %v, want state %s", step.cmd, out, want)
		}
		if r := row(); r.Paused != step.paused {
			t.Errorf("after queue %s, queues shows paused=%v", step.cmd, r.Paused)
		}
		if q, err := in.Queue(ctx, queue); err != nil || q.Paused != step.paused {
			t.Errorf("after queue %s, the cluster has paused=%v (%v)", step.cmd, q.Paused, err)
		}
	}

	// Refused while it holds the task, then forced: the cluster is left
	// as it was.
	if code, _, errs := tg.run(t, "", "queue", "delete", "-redis-cluster", addrs, queue); code != 1 || !strings.Contains(errs, "not empty") {
		t.Errorf("queue delete of a queue with a task: exit %d, %s", code, errs)
	}
	run([]string{"queue", "delete"}, "-force", queue)
	if q, err := in.Queue(ctx, queue); err != nil || q.Waiting != 0 {
		t.Errorf("after queue delete -force, the cluster has %d waiting (%v)", q.Waiting, err)
	}
	if ti, err := in.Task(ctx, id); err != nil || ti.State != inspect.StateUnknown {
		t.Errorf("after queue delete -force, task %s is %+v (%v), want unknown", id, ti, err)
	}
}

// The process itself on -redis-cluster alone: a worker (no coordinator: in
// the cluster pass the cluster is shared with other packages' tests) runs
// an upload enqueued on the cluster, and drains on stop.
func TestWorkerProcessClusterFlag(t *testing.T) {
	addrs := os.Getenv(testenv.EnvCluster)
	if addrs == "" {
		addrs = miniredis.RunT(t).Addr()
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ","), ContextTimeoutEnabled: true})
	defer rdb.Close()
	queue := testenv.Queue(t)
	root := t.TempDir()
	src := filepath.Join(root, "in.txt")
	if err := os.WriteFile(src, []byte("cluster"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs syncBuf
	stop := make(chan struct{})
	done := make(chan int, 1)
	go func() {
		done <- runEnv([]string{"-redis-cluster", addrs, "-role", "worker", "-queues", queue, "-upload-roots", root, "-drain-timeout", "5s"},
			env(nil), &logs, &logs, stop)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.New(ctx, rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h, err := c.Enqueue(ctx, upload.Args{Src: src, Dest: filepath.Join(root, "out", "in.txt")}, &client.EnqueueOpts{Queue: queue})
	if err != nil {
		t.Fatal(err)
	}
	r, err := client.Result[upload.Result](ctx, h)
	if err != nil || r.Bytes != 7 {
		t.Errorf("upload: %+v, %v\n%s", r, err, logs.String())
	}
	close(stop)
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit code %d\n%s", code, logs.String())
		}
	case <-ctx.Done():
		t.Fatal("the process did not drain")
	}
	if !strings.Contains(logs.String(), `"target":"cluster `+addrs+`"`) {
		t.Errorf("the process does not say it uses the cluster:\n%s", logs.String())
	}
}
