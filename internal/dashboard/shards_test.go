package dashboard

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/testenv"
)

// shardedFixture declares a sharded queue of 3 shards on f's Redis and
// enqueues n tasks to it, placed by their ids; it returns the queue and
// its shards.
func shardedFixture(t testing.TB, f *fixture, n int) (string, []string) {
	t.Helper()
	ctx := context.Background()
	q := testenv.Queue(t) + "-s"
	names, err := f.c.DeclareShards(ctx, q, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := f.c.Enqueue(ctx, Job{N: i}, &client.EnqueueOpts{Queue: q, ID: fmt.Sprintf("sharded-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	return q, names
}

// The overview lists a sharded queue once, and its page shows the sums
// with a table of its shards, each linking to a page of its own; the
// tasks listed are the shards'. No shard is a row of the overview.
func TestShardedQueuePage(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	q, names := shardedFixture(t, f, 7)
	srv, hc := f.server(t, Options{})

	code, body := get(t, hc, srv.URL+"/")
	if code != http.StatusOK || strings.Count(body, `href="/queues/`+q+`"`) != 1 || !strings.Contains(body, "3 shards") {
		t.Errorf("overview: %d; want the sharded queue once, with \"3 shards\":\n%.3000s", code, body)
	}
	for _, n := range names {
		if strings.Contains(body, `href="/queues/`+n+`"`) {
			t.Errorf("overview lists shard %s as a queue", n)
		}
	}

	code, body = get(t, hc, srv.URL+"/queues/"+q)
	if code != http.StatusOK || !strings.Contains(body, "Shards") || !strings.Contains(body, "waiting <span class=\"count\">7</span>") {
		t.Fatalf("queue page: %d; want the shards' table and 7 waiting:\n%.4000s", code, body)
	}
	for _, n := range names {
		if !strings.Contains(body, `href="/queues/`+n+`?state=waiting"`) {
			t.Errorf("queue page: no link to shard %s", n)
		}
	}
	if c := strings.Count(body, `aria-label="Cancel `); c != 7 {
		t.Errorf("queue page lists %d of the 7 tasks", c)
	}

	// A shard's page: its own tasks, and the way back to its queue.
	info, err := f.in.Queue(context.Background(), names[0])
	if err != nil {
		t.Fatal(err)
	}
	code, body = get(t, hc, srv.URL+"/queues/"+names[0])
	if code != http.StatusOK || !strings.Contains(body, "Shard 0 of the sharded queue") || !strings.Contains(body, `href="/queues/`+q+`"`) {
		t.Errorf("shard page: %d:\n%.3000s", code, body)
	}
	if c := strings.Count(body, `aria-label="Cancel `+names[0]+"/"); int64(c) != info.Waiting {
		t.Errorf("shard page lists %d of the shard's tasks, want its %d waiting", c, info.Waiting)
	}
	// A lookup of a task by the id it was enqueued with leads to its page
	// on its shard.
	want := names[keys.JumpShard("sharded-3", len(names))] + "/sharded-3"
	resp, err := hc.Get(srv.URL + "/queues/" + q + "?id=sharded-3")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/task?id="+url.QueryEscape(want) {
		t.Errorf("lookup of sharded-3: %d to %q, want %s", resp.StatusCode, loc, want)
	}
	// A '~' that is no shard's is a bad request.
	if code, _ := get(t, hc, srv.URL+"/queues/"+q+"~x"); code != http.StatusBadRequest {
		t.Errorf("GET /queues/%s~x: %d, want 400", q, code)
	}
}
