package dashboard

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
)

// BenchmarkPageTimesLargeBacklog measures every page with a backlog of
// ASYNC_DASHBOARD_BENCH_N tasks (default 1,000,000) waiting in one queue,
// 10,000 groups of one member and one of 1000 in another, on a real Redis (ASYNC_REDIS_ADDR; database 9, flushed before and
// after). It is a benchmark so that the test runs do not pay for it:
//
//	ASYNC_REDIS_ADDR=127.0.0.1:PORT go test -run '^$' -bench PageTimesLargeBacklog -benchtime 1x -v ./internal/dashboard/
//
// It measures once, whatever b.N. For each page it reports the median and the worst of 7 runs of the
// handler alone (ServeHTTP into a recorder: the reads from Redis and the
// rendering) and of a full HTTP GET through a local server, and fails when
// a median is 200 ms or more.
func BenchmarkPageTimesLargeBacklog(b *testing.B) {
	b.ReportAllocs()
	measurePageTimes(b)
}

// benchDB is the database of a real server the page-time measurement
// owns (flushed first and last).
const benchDB = 2

func measurePageTimes(t testing.TB) {
	testenv.RequireReal(t)
	n := 1_000_000
	if s := os.Getenv("ASYNC_DASHBOARD_BENCH_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	env := testenv.IsolatedRedis(t, benchDB)
	t.Cleanup(func() { env.RDB.FlushDB(context.Background()) })
	ctx := context.Background()
	c, err := client.New(ctx, env.RDB, &client.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	queue := "backlog"
	start := time.Now()
	const chunk = 1000
	specs := make([]client.Spec, 0, chunk)
	for i := 0; i < n; i += chunk {
		specs = specs[:0]
		for j := i; j < min(i+chunk, n); j++ {
			specs = append(specs, client.Spec{Args: Job{N: j, Msg: "payload of task " + strconv.Itoa(j)}, Opts: &client.EnqueueOpts{Queue: queue}})
		}
		if _, err := c.EnqueueMany(ctx, specs); err != nil {
			t.Fatal(err)
		}
	}
	// 10,000 delayed ones too, with ids, so that the scheduled list and a
	// task lookup have something to show.
	for i := 0; i < 10_000; i += chunk {
		specs = specs[:0]
		for j := i; j < i+chunk; j++ {
			specs = append(specs, client.Spec{Args: Job{N: j}, Opts: &client.EnqueueOpts{Queue: queue, ID: "later-" + strconv.Itoa(j), Delay: time.Hour}})
		}
		if _, err := c.EnqueueMany(ctx, specs); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("enqueued %d waiting and 10000 scheduled tasks in %v", n, time.Since(start).Round(time.Millisecond))
	// 10,000 small groups (ForkJoin of one member each, made by 8
	// goroutines in chunks) and one of 1000 members, homed in a queue of
	// their own: the groups page lists its first page, the group page
	// the big one's members.
	start = time.Now()
	const grouped, smallGroups = "grouped", 10_000
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for j := w; j < smallGroups; j += 8 {
				if _, err := patterns.ForkJoin(ctx, c, []client.Spec{{Args: Job{N: j}, Opts: &client.EnqueueOpts{Queue: grouped}}}, nil, nil); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	big := make([]client.Spec, 1000)
	for j := range big {
		big[j] = client.Spec{Args: Job{N: j}, Opts: &client.EnqueueOpts{Queue: grouped}}
	}
	bigGroup, err := patterns.ForkJoin(ctx, c, big, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("made %d groups of one member and one of 1000 in %v", smallGroups, time.Since(start).Round(time.Millisecond))
	in := inspect.New(env.RDB)
	q, err := in.Queue(ctx, queue)
	if err != nil || q.Waiting != int64(n) {
		t.Fatalf("queue: %+v, %v", q, err)
	}
	h, err := New(in, Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	hc := &http.Client{}
	defer hc.CloseIdleConnections()

	pages := []string{
		"/",
		"/api/overview",
		"/queues/" + queue,
		"/api/queues/" + queue,
		"/queues/" + queue + "?state=waiting&cursor=" + url.QueryEscape(firstCursor(t, in, queue)),
		"/queues/" + queue + "?state=waiting&kind=no.such.kind",
		"/queues/" + queue + "?state=scheduled",
		"/queues/" + queue + "?state=running",
		"/queues/" + queue + "?state=dead",
		"/queues/" + queue + "?id=later-5000",
		"/task?id=" + url.QueryEscape(queue+"/later-5000"),
		"/groups",
		"/groups?queue=" + grouped,
		"/group?id=" + url.QueryEscape(bigGroup.ID()),
		"/repeats",
		"/workers",
		"/throttles",
	}
	const runs = 7
	var report string
	measure := func(p string) {
		var handler, full []time.Duration
		for range runs {
			req := httptest.NewRequest("GET", p, nil)
			req.Host = "127.0.0.1"
			rec := httptest.NewRecorder()
			t0 := time.Now()
			h.ServeHTTP(rec, req)
			handler = append(handler, time.Since(t0))
			if rec.Code != http.StatusOK && rec.Code != http.StatusSeeOther {
				t.Fatalf("GET %s: %d\n%.500s", p, rec.Code, rec.Body.String())
			}
			t0 = time.Now()
			resp, err := hc.Get(srv.URL + p)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			full = append(full, time.Since(t0))
		}
		slices.Sort(handler)
		slices.Sort(full)
		line := fmt.Sprintf("| `%s` | %.1f | %.1f | %.1f | %.1f |", p, ms(handler[runs/2]), ms(handler[runs-1]), ms(full[runs/2]), ms(full[runs-1]))
		report += line + "\n"
		if handler[runs/2] >= 200*time.Millisecond || full[runs/2] >= 200*time.Millisecond {
			t.Errorf("GET %s: median %v (handler), %v (HTTP); want under 200 ms", p, handler[runs/2], full[runs/2])
		}
	}
	for _, p := range pages {
		measure(p)
	}
	// The overview reads one history per queue: with 100 more queues.
	for j := range 100 {
		if _, err := c.Enqueue(ctx, Job{N: j}, &client.EnqueueOpts{Queue: "small-" + strconv.Itoa(j)}); err != nil {
			t.Fatal(err)
		}
	}
	report += "| with 101 queues: | | | | |\n"
	measure("/")
	measure("/api/overview")
	t.Logf("page times with %d tasks waiting in one queue, ms (median, worst of %d):\n| page | handler median | handler worst | HTTP GET median | HTTP GET worst |\n|---|---|---|---|---|\n%s", n, runs, report)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// firstCursor is the Next of the first page of waiting tasks: the second
// page's cursor.
func firstCursor(t testing.TB, in *inspect.Inspector, queue string) string {
	p, err := in.Tasks(context.Background(), queue, inspect.ListOpts{State: inspect.StateWaiting, Limit: pageSize})
	if err != nil || p.Next == "" {
		t.Fatalf("first page: %v", err)
	}
	return p.Next
}
