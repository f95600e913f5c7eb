package httpapi

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// pUpload's handler reports Done of Total every 20 ms (the core writes at
// most every 250 ms) until its test lets it go.
type pUpload struct {
	Done  int64 `msgpack:"done"`
	Total int64 `msgpack:"total"`
}

func (pUpload) Kind() string { return "p.upload" }

// handleReporting registers pUpload's handler on w: it returns Total once
// release is closed.
func handleReporting(w *worker.Worker, release <-chan struct{}) {
	worker.Handle(w, func(ctx context.Context, u pUpload) (int64, error) {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			worker.ReportProgress(ctx, u.Done, u.Total)
			select {
			case <-release:
				return u.Total, nil
			case <-ctx.Done():
				return 0, context.Cause(ctx)
			case <-tick.C:
			}
		}
	})
}

// GET /v1/tasks/{id} has "progress" only for a task whose handler
// reported, with done, total, attempt and updated; GET /v1/groups/{id}
// has the members' sums as work_done and work_total, 0 when none
// reported.
func TestProgressFields(t *testing.T) {
	t.Parallel()
	env := testenv.Redis(t)
	a := newAPI(t, env, Config{})
	release := make(chan struct{})
	testenv.StartWorker(t, env.RDB, a.queue, &worker.Config{Concurrency: 4}, func(w *worker.Worker) {
		handleReporting(w, release)
	}, true)
	esc := url.PathEscape
	id := a.do("POST", "/v1/queues/"+a.queue+"/tasks", map[string]any{"kind": "p.upload", "args": map[string]any{"done": 1 << 20, "total": 4 << 20}}).want(t, 201).JSON["id"].(string)
	later := a.do("POST", "/v1/queues/"+a.queue+"/tasks", map[string]any{"kind": "p.upload", "delay": "1h"}).want(t, 201).JSON["id"].(string)
	gid := a.do("POST", "/v1/groups", map[string]any{"queue": a.queue, "tasks": []map[string]any{
		{"kind": "p.upload", "args": map[string]any{"done": 2 << 20, "total": 3 << 20}},
		{"kind": "p.upload", "args": map[string]any{"done": 5, "total": 10}},
	}}).want(t, 201).JSON["id"].(string)

	var p map[string]any
	testenv.Eventually(t, 10*time.Second, "the task's progress", func() bool {
		p, _ = a.do("GET", "/v1/tasks/"+esc(id), nil).want(t, 200).JSON["progress"].(map[string]any)
		return p != nil
	})
	if p["done"] != float64(1<<20) || p["total"] != float64(4<<20) || p["attempt"] != float64(1) || len(p) != 4 {
		t.Errorf("progress: %v", p)
	}
	if u, err := time.Parse(time.RFC3339Nano, p["updated"].(string)); err != nil || time.Since(u) > time.Hour || time.Until(u) > time.Hour {
		t.Errorf("updated %v: %v", p["updated"], err)
	}
	if r := a.do("GET", "/v1/tasks/"+esc(later), nil).want(t, 200); r.JSON["progress"] != nil {
		t.Errorf("a task that reported nothing: %s", r.Body)
	}
	var g map[string]any
	testenv.Eventually(t, 10*time.Second, "the group's sums", func() bool {
		g = a.do("GET", "/v1/groups/"+esc(gid), nil).want(t, 200).JSON
		return g["work_done"] == float64(2<<20+5) && g["work_total"] == float64(3<<20+10)
	})
	if g["ended"] != false || g["total"] != float64(2) {
		t.Errorf("group: %v", g)
	}

	close(release)
	out := a.do("GET", "/v1/groups/"+esc(gid)+"/outcome?wait=20s", nil).want(t, 200).JSON
	if out["ended"] != true || out["work_done"] != float64(3<<20+10) || out["work_total"] != float64(3<<20+10) {
		t.Errorf("group outcome: %v", out)
	}
	a.do("GET", "/v1/tasks/"+esc(id)+"/outcome?wait=20s", nil).want(t, 200)
	p, _ = a.do("GET", "/v1/tasks/"+esc(id), nil).want(t, 200).JSON["progress"].(map[string]any)
	if p["done"] != float64(4<<20) || p["total"] != float64(4<<20) {
		t.Errorf("succeeded task's progress: %v", p)
	}
	// A group none of whose members reported: both 0, there.
	g2 := a.do("POST", "/v1/groups", map[string]any{"queue": a.queue, "tasks": []map[string]any{{"kind": "p.none"}}}).want(t, 201).JSON["id"].(string)
	g = a.do("GET", "/v1/groups/"+esc(g2), nil).want(t, 200).JSON
	if g["work_done"] != float64(0) || g["work_total"] != float64(0) {
		t.Errorf("a group with no reports: %v", g)
	}
}
