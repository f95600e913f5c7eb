package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/asynctest"
)

// The commands reach a Redis Cluster named by -redis-cluster alone (the
// environment names no Redis): the 3-master cluster of the cluster pass
// (ASYNC_REDIS_CLUSTER), else a miniredis, which answers CLUSTER SLOTS as a
// cluster of one node. Enqueue, queues, tasks, queue pause and resume,
// and queue delete, each checked against what a cluster client of the
// test reads.
func TestCLIClusterFlag(t *testing.T) {
	addrs := os.Getenv(asynctest.EnvCluster)
	if addrs == "" {
		addrs = miniredis.RunT(t).Addr()
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ",")})
	defer rdb.Close()
	in := inspect.New(rdb)
	ctx := context.Background()
	tg := &target{env: map[string]string{}}
	run := func(name []string, args ...string) string {
		t.Helper()
		return tg.cmd(t, 0, append(append(append([]string(nil), name...), "-redis-cluster", addrs), args...)...)
	}
	queue := asynctest.Queue(t)

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
