package dashboard

import (
	"context"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
)

// The groups page lists 100 groups at a time, says so, and links to the
// next page, which lists the rest. On a database of its own (not in
// parallel): its groups would push the other tests' groups off the first
// page of every queue's groups.
func TestGroupsPaged(t *testing.T) {
	env := testenv.IsolatedRedis(t, groupsDB)
	ctx := context.Background()
	c, err := client.New(ctx, env.RDB, &client.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	f := &fixture{env: env, c: c, in: inspect.New(env.RDB)}
	q := testenv.Queue(t) + "-g"
	for range 130 {
		if _, err := patterns.ForkJoin(ctx, c, []client.Spec{{Args: Job{N: 1}, Opts: &client.EnqueueOpts{Queue: q}}},
			&client.Spec{Args: Job{N: 2}, Opts: &client.EnqueueOpts{Queue: q}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	srv, hc := f.server(t, Options{})
	row := regexp.MustCompile(`href="/group\?id=(group[^"]+)"`)
	next := regexp.MustCompile(`<a href="(/groups\?[^"]+)" rel="next">`)
	code, body := get(t, hc, srv.URL+"/groups?queue="+q)
	first := row.FindAllStringSubmatch(body, -1)
	m := next.FindStringSubmatch(body)
	if code != http.StatusOK || len(first) != 100 || m == nil || !strings.Contains(body, "100 groups a page") {
		t.Fatalf("first page: %d, %d groups, next link %v", code, len(first), m)
	}
	code, body = get(t, hc, srv.URL+strings.ReplaceAll(m[1], "&amp;", "&"))
	second := row.FindAllStringSubmatch(body, -1)
	if code != http.StatusOK || len(second) != 30 || next.MatchString(body) {
		t.Fatalf("second page: %d, %d groups, next link %v", code, len(second), next.FindStringSubmatch(body))
	}
	seen := map[string]bool{}
	for _, r := range append(first, second...) {
		if seen[r[1]] {
			t.Fatalf("%s listed twice", r[1])
		}
		seen[r[1]] = true
	}
	if code, _ := get(t, hc, srv.URL+"/groups?cursor=nope"); code != http.StatusBadRequest {
		t.Errorf("a bad cursor: %d, want 400", code)
	}
}

// groupsDB is the real Redis database of TestGroupsPaged (no other
// package's tests use it).
const groupsDB = 5
