package dashboard_test

// The known workload the browser tests look at, built with the client, a
// worker and the patterns on a Redis of their own: the dashboard lists
// every queue of its Redis, so a shared database would show other tests'
// queues (and the screenshots would change from run to run).

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/dashboard"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/ratelimit"
	"github.com/taskfleet/async/worker"
)

// browserDB is the database of a real server that the browser tests own
// (flushed when they start); other packages use 8 to 15. In the cluster
// pass, and without ASYNC_REDIS_ADDR, it is a miniredis of their own.
const browserDB = 6

// Report is the workload's task: its handler fails it for good while Fail
// is set and the workload is not healed.
type Report struct {
	N    int    `msgpack:"n"`
	Fail bool   `msgpack:"fail"`
	Msg  string `msgpack:"msg,omitempty"`
}

func (Report) Kind() string { return "reports.build" }

// Email is a task that waits: no worker serves its queue.
type Email struct {
	To      string `msgpack:"to"`
	Subject string `msgpack:"subject"`
}

func (Email) Kind() string { return "emails.send" }

// Hostile is a task whose kind is a plain name and whose args are not:
// a script tag, bytes that are not UTF-8, and 100 KB of text.
type Hostile struct {
	Name string `msgpack:"name"`
	Bad  string `msgpack:"bad"`
	Long string `msgpack:"long"`
}

func (Hostile) Kind() string { return "import.row" }

// Thumb is the task of the pause test's queue.
type Thumb struct {
	N int `msgpack:"n"`
}

func (Thumb) Kind() string { return "thumbs.make" }

const (
	hostileScript = `<script>alert(1)</script>`
	hostileBad    = "\xff\xfe"
)

var hostileLong = strings.Repeat("0123456789abcdef", 100<<10/16) // 100 KB

// Queue names: fixed, on a Redis of the tests' own.
const (
	qEmails  = "emails"  // waiting tasks, a scheduled one, group members; no worker
	qReports = "reports" // served by the workload's worker; dead tasks
	qBilling = "billing" // paused, with waiting tasks
	qImport  = "import"  // the hostile task, waiting
	qThumbs  = "thumbs"  // the pause test's queue (its worker comes with the test)
	qUploads = "uploads" // a sharded queue of 3 shards, waiting tasks on them; no worker
)

// workload is the known state the pages show.
type workload struct {
	env    *testenv.Env
	c      *client.Client
	in     *inspect.Inspector
	worker *worker.Worker // serves qReports
	healed atomic.Bool    // once set, Report tasks with Fail succeed

	Waiting   []string // ids of the waiting emails
	Scheduled string
	Dead      []string // ids of the dead reports, oldest first; the last one's error is hostile
	DeadMsg   string   // the error of Dead[0]
	Hostile   string
	Held      string // held by the rate of partner:acme
	Group     string
	Repeat    string
	Shards    []string // the shards of qUploads
}

// newWorkload builds the workload on a Redis of its own.
func newWorkload(t *testing.T) *workload {
	t.Helper()
	env := testenv.IsolatedRedis(t, browserDB)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := &workload{env: env, c: testenv.Client(t, env), in: inspect.New(env.RDB)}
	cfg := &worker.Config{Concurrency: 2, RateLimits: []worker.RateLimit{{KeyPrefix: "partner:", Limit: ratelimit.Limit{Rate: 1, Per: time.Hour, Burst: 1}}}}
	w.worker = testenv.StartWorker(t, env.RDB, qReports, cfg, func(wk *worker.Worker) {
		worker.Handle(wk, func(ctx context.Context, r Report) (Report, error) {
			if r.Fail && !w.healed.Load() {
				return r, worker.Permanent(errors.New(r.Msg))
			}
			return r, nil
		})
	}, false)

	enqueue := func(args client.Args, opts *client.EnqueueOpts) *client.Handle {
		t.Helper()
		h, err := w.c.Enqueue(ctx, args, opts)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	// Reports: some succeed (the chart's processed line), two die.
	var hs []*client.Handle
	for n := 1; n <= 5; n++ {
		hs = append(hs, enqueue(Report{N: n}, &client.EnqueueOpts{Queue: qReports}))
	}
	for _, h := range hs {
		if _, err := h.Outcome(ctx); err != nil {
			t.Fatal(err)
		}
	}
	w.DeadMsg = "upstream returned 503 for report 7"
	for _, x := range []struct{ id, msg string }{{"report-7", w.DeadMsg}, {"report-9", "template missing: quarterly.tmpl"},
		{"report-13", "bad row " + hostileScript + " " + hostileBad}} {
		h := enqueue(Report{N: 7, Fail: true, Msg: x.msg}, &client.EnqueueOpts{Queue: qReports, ID: x.id, MaxAttempts: 1})
		if _, err := h.Outcome(ctx); err == nil {
			t.Fatalf("%s succeeded; want it dead", x.id)
		}
		w.Dead = append(w.Dead, h.ID())
	}
	// A rate of one an hour for partner:acme: the first task runs, the
	// second is held (parked in Redis) for an hour.
	if _, err := enqueue(Report{N: 30}, &client.EnqueueOpts{Queue: qReports, RateKey: "partner:acme"}).Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	w.Held = enqueue(Report{N: 31}, &client.EnqueueOpts{Queue: qReports, RateKey: "partner:acme"}).ID()
	// Emails: waiting, one scheduled an hour on.
	for i, to := range []string{"ada@example.com", "grace@example.com", "alan@example.com", "edsger@example.com"} {
		h := enqueue(Email{To: to, Subject: "Your report is ready"}, &client.EnqueueOpts{Queue: qEmails, ID: "welcome-" + string(rune('a'+i))})
		w.Waiting = append(w.Waiting, h.ID())
	}
	w.Scheduled = enqueue(Email{To: "barbara@example.com", Subject: "Reminder"}, &client.EnqueueOpts{Queue: qEmails, ID: "reminder", Delay: time.Hour}).ID()
	// A group: two members in reports (they run), two in emails (they
	// wait), its join in emails.
	g, err := patterns.ForkJoin(ctx, w.c, []client.Spec{
		{Args: Report{N: 20}, Opts: &client.EnqueueOpts{Queue: qReports}},
		{Args: Report{N: 21}, Opts: &client.EnqueueOpts{Queue: qReports}},
		{Args: Email{To: "team@example.com", Subject: "Part 1"}, Opts: &client.EnqueueOpts{Queue: qEmails}},
		{Args: Email{To: "team@example.com", Subject: "Part 2"}, Opts: &client.EnqueueOpts{Queue: qEmails}},
	}, &client.Spec{Args: Email{To: "team@example.com", Subject: "All parts done"}, Opts: &client.EnqueueOpts{Queue: qEmails}},
		&patterns.GroupOpts{ID: "quarterly-close", Queue: qReports})
	if err != nil {
		t.Fatal(err)
	}
	w.Group = g.ID()
	// A repeat (no coordinator runs: it shows its next fire and never
	// fires).
	r, err := patterns.Repeat(ctx, w.c, "nightly-digest", client.Spec{Args: Email{To: "ops@example.com", Subject: "Nightly digest"},
		Opts: &client.EnqueueOpts{Queue: qEmails}}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	w.Repeat = r.Name()
	// Billing: paused, with tasks waiting.
	for n := 1; n <= 3; n++ {
		enqueue(Report{N: 100 + n}, &client.EnqueueOpts{Queue: qBilling})
	}
	if err := w.in.Pause(ctx, qBilling); err != nil {
		t.Fatal(err)
	}
	// The hostile task, waiting (its meta holds the script tag too).
	w.Hostile = enqueue(Hostile{Name: hostileScript, Bad: hostileBad, Long: hostileLong}, &client.EnqueueOpts{Queue: qImport, ID: "row-1",
		Meta: map[string]string{"note": hostileScript}}).ID()

	// Uploads: a sharded queue, its tasks spread over the shards.
	if w.Shards, err = w.c.DeclareShards(ctx, qUploads, 3); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		enqueue(Thumb{N: i}, &client.EnqueueOpts{Queue: qUploads, ID: "upload-" + string(rune('a'+i))})
	}

	testenv.Eventually(t, browserTimeout, "the second partner:acme task to be held", func() bool {
		ti, err := w.in.Task(ctx, w.Held)
		if err != nil {
			t.Fatal(err)
		}
		return ti.State == inspect.StateHeld
	})
	// The group's members in reports ran.
	testenv.Eventually(t, browserTimeout, "the group's members in reports to run", func() bool {
		gs, err := w.in.Groups(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, gi := range gs {
			if gi.ID == w.Group {
				return gi.Succeeded == 2
			}
		}
		return false
	})
	return w
}

// serve starts the dashboard on the workload, mounted at base ("" or
// "/ui"), on a loopback httptest server, and returns its URL with base.
func (w *workload) serve(t *testing.T, base string) string {
	t.Helper()
	h, err := dashboard.New(w.in, dashboard.Options{Addr: "127.0.0.1:0", BasePath: base, Target: "redis://127.0.0.1:6379/6"})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(base+"/", h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + base
}
