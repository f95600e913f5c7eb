package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/httpapi"
)

// The HTTP API's targets (issue 18).
const (
	apiBatchTarget = 50000                  // tasks/s through POST .../tasks/batch
	apiP99Target   = 2 * time.Millisecond   // single POST at apiRate, from its scheduled send time
	apiSettleWait  = 100 * time.Millisecond // between a server's start and its first request
)

// upload is the args of every API measurement: about 100 bytes of JSON,
// and the same msgpack map when a Go program enqueues it (the fields in
// the JSON's key order, each named by its msgpack tag, so the JSON rule
// and the Go encoder write the same bytes).
type upload struct {
	Path string   `msgpack:"path"`
	Size int64    `msgpack:"size"`
	User int      `msgpack:"user"`
	Tags []string `msgpack:"tags"`
	N    int      `msgpack:"n"`
}

func (upload) Kind() string { return "upload" }

// uploadArgs returns the i-th task's args.
func uploadArgs(i int) upload {
	return upload{
		Path: fmt.Sprintf("uploads/2026/12/05/%07d/IMG_20261205_101112.jpg", i%10000000),
		Size: 1048576 + int64(i%1000),
		User: 4242,
		Tags: []string{"raw", "jpeg"},
		N:    i,
	}
}

// uploadJSON is u as JSON, its keys in field order.
func uploadJSON(u upload) []byte {
	b, _ := json.Marshal(struct {
		Path string   `json:"path"`
		Size int64    `json:"size"`
		User int      `json:"user"`
		Tags []string `json:"tags"`
		N    int      `json:"n"`
	}{u.Path, u.Size, u.User, u.Tags, u.N})
	return b
}

// taskJSON is the API's task object of the i-th task (the queue comes from
// the path).
func taskJSON(i int) []byte {
	b, _ := json.Marshal(httpapi.TaskObject{Kind: upload{}.Kind(), Args: uploadJSON(uploadArgs(i))})
	return b
}

// batchBody is a JSON array of n task objects, numbered from first.
func batchBody(first, n int) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(taskJSON(first + i))
	}
	b.WriteByte(']')
	return b.Bytes()
}

// apiServer is the API handler served in the bench process, on its own
// client and Redis connections, and an HTTP/1.1 keep-alive client of it.
type apiServer struct {
	url  string
	srv  *http.Server
	hc   *http.Client
	tr   *http.Transport
	done func()
}

func (e *env) startAPI(ctx context.Context) (*apiServer, error) {
	rdb := e.newRedis()
	c, err := client.New(context.Background(), rdb, &client.Config{Logger: e.logger})
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	h, err := httpapi.New(httpapi.Config{Client: c, Inspector: inspect.New(rdb), Logger: e.logger})
	if err != nil {
		_ = c.Close()
		_ = rdb.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = c.Close()
		_ = rdb.Close()
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	tr := &http.Transport{
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	a := &apiServer{
		url: "http://" + ln.Addr().String(),
		srv: srv,
		hc:  &http.Client{Transport: tr, Timeout: time.Minute},
		tr:  tr,
	}
	a.done = func() {
		tr.CloseIdleConnections()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-served
		_ = c.Close()
		_ = rdb.Close()
	}
	return a, nil
}

// post sends body to path and returns the response body; a status other
// than want is an error.
func (a *apiServer) post(ctx context.Context, path string, body []byte, want int) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body) // all of it, so the connection is kept
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != want {
		return nil, fmt.Errorf("POST %s: %s: %.300s", path, resp.Status, out)
	}
	return out, nil
}

// apiInfo is the HTTP API section of the report.
type apiInfo struct {
	BatchSize, BatchTasks, Clients int
	BodyBytes                      int // one batch request's body
	TaskJSON, ArgsJSON, ArgsMsgp   int // one task object, its args as JSON and as msgpack (Go encoder)
	ArgsFromJSON                   int // the args' msgpack by the JSON rule (codec.FromJSON)
	HTTP, Many                     []*result
	Ratios                         []float64 // per pair: HTTP ÷ EnqueueMany
	HTTPFirst                      []bool

	Rate       int
	Dur, Warm  time.Duration
	Single     []*openLoopRun // in pair order
	Direct     []*openLoopRun
	SingleBody int // one single POST's body
	Errs       []string
}

// openLoopRun is one open-loop run: latencies from each request's
// scheduled send time to its reply, and its cost.
type openLoopRun struct {
	N                     int
	Rate                  float64 // achieved: requests ÷ (last reply − first scheduled send)
	P50, P90, P99, P999   time.Duration
	Max                   time.Duration
	LateP50, LateP99      time.Duration // the generator's own lateness: actual − scheduled send
	SvcP50, SvcP99        time.Duration // actual send → reply
	MaxInFlight           int64
	Res                   *result
	HTTPFirst             bool
	lat, late, svc        []time.Duration
	inFlight, maxInFlight atomic.Int64
}

// apiRun measures the API: batches through POST .../tasks/batch against
// EnqueueMany of the same tasks, then single POSTs at a fixed rate against
// Enqueue calls at the same rate. No worker runs: the tasks stay in their
// queue's stream. clean is the caller's retry-when-busy wrapper.
func (e *env) apiRun(ctx context.Context, sz sizes, batch, single bool, clean func(func() (*result, error)) (*result, error)) (*apiInfo, error) {
	ai := &apiInfo{
		BatchSize: sz.APIBatch, BatchTasks: sz.APIBatchTasks, Clients: sz.APIClients,
		Rate: sz.APIRate, Dur: sz.APIDur, Warm: sz.APIWarm,
	}
	ai.TaskJSON = len(taskJSON(0))
	ai.ArgsJSON = len(uploadJSON(uploadArgs(0)))
	if b, err := codec.Marshal(uploadArgs(0)); err == nil {
		ai.ArgsMsgp = len(b)
	}
	if b, err := codec.FromJSON(nil, uploadJSON(uploadArgs(0)), 0); err == nil {
		ai.ArgsFromJSON = len(b)
	}
	a, err := e.startAPI(ctx)
	if err != nil {
		return nil, err
	}
	defer a.done()

	if batch {
		for i := range sz.Reps {
			httpFirst := i%2 == 0
			var h, m *result
			runHTTP := func() error {
				fmt.Fprintf(e.progress, "  HTTP batch, run %d of %d\n", i+1, sz.Reps)
				h, err = clean(func() (*result, error) { return e.apiBatch(ctx, a, ai, ai.BatchTasks, "") })
				return err
			}
			runMany := func() error {
				fmt.Fprintf(e.progress, "  EnqueueMany, run %d of %d\n", i+1, sz.Reps)
				m, err = clean(func() (*result, error) { return e.apiMany(ctx, ai, ai.BatchTasks, "") })
				return err
			}
			order := []func() error{runHTTP, runMany}
			if !httpFirst {
				order = []func() error{runMany, runHTTP}
			}
			for _, f := range order {
				if err := f(); err != nil {
					return nil, err
				}
			}
			ai.HTTP, ai.Many = append(ai.HTTP, h), append(ai.Many, m)
			ai.Ratios = append(ai.Ratios, h.Rate/m.Rate)
			ai.HTTPFirst = append(ai.HTTPFirst, httpFirst)
		}
		if e.profDir != "" {
			fmt.Fprintln(e.progress, "  profiled HTTP batch, five times the tasks (not in the table)")
			r, err := e.apiBatch(ctx, a, ai, 5*ai.BatchTasks, "api-batch")
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(e.progress, "  %s -> %s\n", r.brief(), filepath.Join(e.profDir, "api-batch.pprof"))
			fmt.Fprintln(e.progress, "  profiled EnqueueMany of the same, five times the tasks (not in the table)")
			if r, err = e.apiMany(ctx, ai, 5*ai.BatchTasks, "api-many"); err != nil {
				return nil, err
			}
			fmt.Fprintf(e.progress, "  %s -> %s\n", r.brief(), filepath.Join(e.profDir, "api-many.pprof"))
		}
	}

	if single {
		ai.SingleBody = len(taskJSON(0))
		for i := range sz.APILatReps {
			httpFirst := i%2 == 0
			var s, d *openLoopRun
			runHTTP := func() error {
				fmt.Fprintf(e.progress, "  single POST at %d/s, run %d of %d\n", sz.APIRate, i+1, sz.APILatReps)
				s, err = e.apiSingle(ctx, a, ai, true, "")
				return err
			}
			runDirect := func() error {
				fmt.Fprintf(e.progress, "  Enqueue at %d/s, run %d of %d\n", sz.APIRate, i+1, sz.APILatReps)
				d, err = e.apiSingle(ctx, a, ai, false, "")
				return err
			}
			order := []func() error{runHTTP, runDirect}
			if !httpFirst {
				order = []func() error{runDirect, runHTTP}
			}
			for _, f := range order {
				if err := f(); err != nil {
					return nil, err
				}
			}
			s.HTTPFirst, d.HTTPFirst = httpFirst, httpFirst
			ai.Single, ai.Direct = append(ai.Single, s), append(ai.Direct, d)
		}
		if e.profDir != "" {
			fmt.Fprintln(e.progress, "  profiled single POSTs (not in the table)")
			s, err := e.apiSingle(ctx, a, ai, true, "api-single")
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(e.progress, "  p50 %v p99 %v -> %s\n", s.P50, s.P99, filepath.Join(e.profDir, "api-single.pprof"))
		}
	}
	return ai, nil
}

// apiBatch posts tasks tasks in batches of ai.BatchSize from
// ai.Clients goroutines, each sending its next batch once the reply to its
// last one arrived, and checks that the queue's stream holds them all.
func (e *env) apiBatch(ctx context.Context, a *apiServer, ai *apiInfo, tasks int, profile string) (*result, error) {
	q := e.queue("api-batch")
	defer e.reset(ctx, q)
	path := "/v1/queues/" + q + "/tasks/batch"
	bodies := make([][]byte, ai.Clients)
	for g := range bodies {
		bodies[g] = batchBody(g*ai.BatchSize, ai.BatchSize)
	}
	ai.BodyBytes = len(bodies[0])
	send := func(g int) error {
		out, err := a.post(ctx, path, bodies[g], http.StatusCreated)
		if err != nil {
			return err
		}
		if n := bytes.Count(out, []byte(`"id"`)); n != ai.BatchSize {
			return fmt.Errorf("POST %s: %d ids in the reply for %d tasks: %.300s", path, n, ai.BatchSize, out)
		}
		return nil
	}
	// Warm up: one batch from each client (connections, pools, scripts),
	// and check the first reply's shape once.
	out, err := a.post(ctx, path, bodies[0], http.StatusCreated)
	if err != nil {
		return nil, err
	}
	var reply struct {
		Tasks []struct {
			ID        string `json:"id"`
			Duplicate bool   `json:"duplicate"`
		} `json:"tasks"`
	}
	if err := json.Unmarshal(out, &reply); err != nil || len(reply.Tasks) != ai.BatchSize || reply.Tasks[0].Duplicate || !strings.HasPrefix(reply.Tasks[0].ID, q+"/") {
		return nil, fmt.Errorf("batch reply: %v: %.300s", err, out)
	}
	warm := ai.BatchSize
	if err := fanOut(ai.Clients, func(g int) error {
		if g == 0 {
			return nil
		}
		return send(g)
	}); err != nil {
		return nil, err
	}
	warm += (ai.Clients - 1) * ai.BatchSize

	perClient := tasks / ai.BatchSize / ai.Clients
	total := perClient * ai.Clients * ai.BatchSize
	r, err := e.measure(ctx, "HTTP batch", total, profile, func() (own, error) {
		return nil, fanOut(ai.Clients, func(g int) error {
			for range perClient {
				if err := send(g); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if got, err := e.in.Queue(ctx, q); err != nil || got.StreamLength != int64(total+warm) {
		return nil, fmt.Errorf("HTTP batch: stream holds %d entries, want %d (%v)", got.StreamLength, total+warm, err)
	}
	r.Settings = fmt.Sprintf("%d goroutines × %d requests of %d tasks (%s bytes of JSON each), HTTP/1.1 keep-alive", ai.Clients, perClient, ai.BatchSize, thousands(float64(ai.BodyBytes)))
	return r, nil
}

// apiMany is apiBatch's baseline: the same tasks (args of the same values,
// encoded by the client) in EnqueueMany calls of the same size, from as many
// goroutines, on one client.
func (e *env) apiMany(ctx context.Context, ai *apiInfo, tasks int, profile string) (*result, error) {
	c, q, done, err := e.session(ctx, "api-many")
	if err != nil {
		return nil, err
	}
	defer done()
	opts := &client.EnqueueOpts{Queue: q}
	specs := make([][]client.Spec, ai.Clients)
	for g := range specs {
		specs[g] = make([]client.Spec, ai.BatchSize)
		for i := range specs[g] {
			specs[g][i] = client.Spec{Args: uploadArgs(g*ai.BatchSize + i), Opts: opts}
		}
	}
	send := func(g int) error {
		hs, err := c.EnqueueMany(ctx, specs[g])
		if err != nil {
			return err
		}
		if len(hs) != ai.BatchSize {
			return fmt.Errorf("EnqueueMany returned %d handles for %d tasks", len(hs), ai.BatchSize)
		}
		return nil
	}
	if err := fanOut(ai.Clients, send); err != nil { // warm up
		return nil, err
	}
	warm := ai.Clients * ai.BatchSize
	perClient := tasks / ai.BatchSize / ai.Clients
	total := perClient * ai.Clients * ai.BatchSize
	r, err := e.measure(ctx, "EnqueueMany", total, profile, func() (own, error) {
		return nil, fanOut(ai.Clients, func(g int) error {
			for range perClient {
				if err := send(g); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if got, err := e.in.Queue(ctx, q); err != nil || got.StreamLength != int64(total+warm) {
		return nil, fmt.Errorf("EnqueueMany: stream holds %d entries, want %d (%v)", got.StreamLength, total+warm, err)
	}
	r.Settings = fmt.Sprintf("%d goroutines × %d calls of %d tasks, one client", ai.Clients, perClient, ai.BatchSize)
	return r, nil
}

// fanOut runs f(0..n-1) in n goroutines and returns the first error.
func fanOut(n int, f func(g int) error) error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[g] = f(g)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// apiSingle runs the open-loop load: after ai.Warm at ai.Rate (not
// counted), ai.Dur at the same rate, each request at its scheduled time in
// a goroutine of its own, so a slow reply delays no later send. With
// viaHTTP each request is a POST of one task object, else a client.Enqueue
// of the same args on the bench's own client (the baseline). Latency counts
// from the scheduled send time, so the generator's own lateness counts
// against the request, not in its favour.
func (e *env) apiSingle(ctx context.Context, a *apiServer, ai *apiInfo, viaHTTP bool, profile string) (*openLoopRun, error) {
	c, q, done, err := e.session(ctx, "api-single")
	if err != nil {
		return nil, err
	}
	defer done()
	path := "/v1/queues/" + q + "/tasks"
	opts := &client.EnqueueOpts{Queue: q}
	n := int(float64(ai.Rate) * ai.Dur.Seconds())
	nw := int(float64(ai.Rate) * ai.Warm.Seconds())
	bodies := make([][]byte, nw+n)
	args := make([]upload, nw+n)
	for i := range bodies {
		if viaHTTP {
			bodies[i] = taskJSON(i)
		} else {
			args[i] = uploadArgs(i)
		}
	}
	send := func(i int) error {
		if !viaHTTP {
			_, err := c.Enqueue(ctx, args[i], opts)
			return err
		}
		out, err := a.post(ctx, path, bodies[i], http.StatusCreated)
		if err == nil && !bytes.Contains(out, []byte(`"id"`)) {
			err = fmt.Errorf("POST %s: no id in the reply: %.300s", path, out)
		}
		return err
	}
	e.settle(ctx)
	if _, err := openLoop(ctx, ai.Rate, 0, nw, send); err != nil { // warm-up
		return nil, err
	}
	var run *openLoopRun
	saved := e.settleMax
	e.settleMax = 0 // settled before the warm-up; the measured part follows it at once
	name := "Enqueue at a fixed rate"
	if viaHTTP {
		name = "single POST at a fixed rate"
	}
	r, err := e.measure(ctx, name, n, profile, func() (own, error) {
		run, err = openLoop(ctx, ai.Rate, nw, n, send)
		return nil, err
	})
	e.settleMax = saved
	if err != nil {
		return nil, err
	}
	if got, err := e.in.Queue(ctx, q); err != nil || got.StreamLength != int64(nw+n) {
		return nil, fmt.Errorf("%s: stream holds %d entries, want %d (%v)", name, got.StreamLength, nw+n, err)
	}
	run.Res = r
	fmt.Fprintf(e.progress, "    p50 %v p99 %v p99.9 %v max %v; generator late p50 %v p99 %v; from the send p50 %v p99 %v; achieved %.0f/s, %d in flight at most; Go CPU %.1f µs, Redis CPU %.1f µs per request; other load %.2f\n",
		run.P50, run.P99, run.P999, run.Max, run.LateP50, run.LateP99, run.SvcP50, run.SvcP99, run.Rate, run.MaxInFlight, r.GoCPUus, r.RedisCPUus, r.Other)
	return run, nil
}

// openLoop sends n requests (numbered from first) at rate per second, the
// i-th at start + i/rate whatever became of the earlier ones, each in its
// own goroutine, and returns the latencies from the scheduled times. It
// waits for each send time with nanosleep on a thread of its own (see
// preciseSleeper).
func openLoop(ctx context.Context, rate, first, n int, send func(i int) error) (*openLoopRun, error) {
	run := &openLoopRun{N: n, lat: make([]time.Duration, n), late: make([]time.Duration, n), svc: make([]time.Duration, n)}
	period := time.Second / time.Duration(rate)
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	var lastEnd atomic.Int64
	sleep, done := preciseSleeper()
	defer done()
	start := time.Now().Add(time.Millisecond)
	for i := range n {
		at := start.Add(time.Duration(i) * period)
		if d := time.Until(at); d > 0 {
			sleep(d)
		}
		if failed.Load() != nil || ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			if f := run.inFlight.Add(1); f > run.maxInFlight.Load() {
				run.maxInFlight.Store(f) // racy maximum; good enough for a report
			}
			err := send(first + i)
			end := time.Now()
			run.inFlight.Add(-1)
			if err != nil {
				failed.CompareAndSwap(nil, &err)
				return
			}
			run.lat[i], run.late[i], run.svc[i] = end.Sub(at), t0.Sub(at), end.Sub(t0)
			for {
				old := lastEnd.Load()
				if end.UnixNano() <= old || lastEnd.CompareAndSwap(old, end.UnixNano()) {
					break
				}
			}
		}()
	}
	wg.Wait()
	if p := failed.Load(); p != nil {
		return nil, *p
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	run.Rate = float64(n) / time.Unix(0, lastEnd.Load()).Sub(start).Seconds()
	run.MaxInFlight = run.maxInFlight.Load()
	pct := func(s []time.Duration, p float64) time.Duration { return s[int(p*float64(len(s)-1))] }
	for _, s := range [][]time.Duration{run.lat, run.late, run.svc} {
		slices.Sort(s)
	}
	run.P50, run.P90, run.P99, run.P999 = pct(run.lat, 0.50), pct(run.lat, 0.90), pct(run.lat, 0.99), pct(run.lat, 0.999)
	run.Max = run.lat[n-1]
	run.LateP50, run.LateP99 = pct(run.late, 0.50), pct(run.late, 0.99)
	run.SvcP50, run.SvcP99 = pct(run.svc, 0.50), pct(run.svc, 0.99)
	return run, nil
}

// medianBy returns the element of rs whose f is the median.
func medianBy[T any](rs []T, f func(T) float64) T {
	s := slices.Clone(rs)
	sort.Slice(s, func(i, j int) bool { return f(s[i]) < f(s[j]) })
	return s[len(s)/2]
}

func medianLat(rs []*openLoopRun, f func(*openLoopRun) time.Duration) time.Duration {
	return f(medianBy(rs, func(r *openLoopRun) float64 { return float64(f(r)) }))
}

func medianFloat(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func (ai *apiInfo) markdown(p func(string, ...any)) {
	p("### HTTP API (issue 18)\n\n")
	p("The API handler (`internal/httpapi`, as `worker api` serves it) runs in the bench process on `127.0.0.1:0` (net/http server, its own client and Redis connections); ")
	p("the requests come from the same process over loopback HTTP/1.1 keep-alive. No worker runs: the tasks stay in their queues' streams. ")
	p("Every task's args are the same five fields, sent as JSON over HTTP (%d bytes; a task object is %d bytes) and as a Go struct with the same values to the client: "+
		"the same msgpack map, %d bytes by the JSON rule, %d by the Go encoder (which writes an int64 field in 9 bytes where the rule takes the smallest int).\n\n",
		ai.ArgsJSON, ai.TaskJSON, ai.ArgsFromJSON, ai.ArgsMsgp)
	if len(ai.HTTP) > 0 {
		h := medianBy(ai.HTTP, func(r *result) float64 { return r.Rate })
		m := medianBy(ai.Many, func(r *result) float64 { return r.Rate })
		ratio := medianFloat(ai.Ratios)
		p("| Measurement | Target | Measured (median of %d) | Redis CPU µs/task | Go CPU µs/task | Redis cmds/task | Met |\n|---|--:|--:|--:|--:|--:|:-:|\n", len(ai.HTTP))
		p("| HTTP batch: POST /v1/queues/{q}/tasks/batch, %d tasks a request, %d clients | ≥ %s tasks/s | %s tasks/s | %.2f | %.2f | %.2f | %s |\n",
			ai.BatchSize, ai.Clients, thousands(apiBatchTarget), thousands(h.Rate), h.RedisCPUus, h.GoCPUus, h.Cmds, met(h.Rate >= apiBatchTarget))
		p("| EnqueueMany of the same tasks, %d a call, %d goroutines (baseline) | — | %s tasks/s | %.2f | %.2f | %.2f | — |\n",
			ai.BatchSize, ai.Clients, thousands(m.Rate), m.RedisCPUus, m.GoCPUus, m.Cmds)
		p("| HTTP batch ÷ EnqueueMany (median of the pairs' ratios) | — | %.2f | | | | — |\n\n", ratio)
		runs := func(rs []*result) string {
			s := make([]string, len(rs))
			for i, r := range rs {
				s[i] = thousands(r.Rate)
			}
			return strings.Join(s, ", ")
		}
		ratios := make([]string, len(ai.Ratios))
		for i, x := range ai.Ratios {
			ratios[i] = fmt.Sprintf("%.2f", x)
		}
		p("%s tasks a run (%s). Runs in pair order (the first of each pair alternates): HTTP %s; EnqueueMany %s; ratios %s. Other load (cores) HTTP %s; EnqueueMany %s. ",
			thousands(float64(h.Tasks)), h.Settings, runs(ai.HTTP), runs(ai.Many), strings.Join(ratios, ", "),
			otherList(ai.HTTP), otherList(ai.Many))
		p("Go CPU is the whole bench process: for the HTTP row the client's sending and reading as well as the server's decoding, conversion and enqueue. ")
		p("CPU per task, Go and Redis together: HTTP %.2f µs, EnqueueMany %.2f µs; so the machine's %d cores, with nothing else running, could carry at most %s HTTP tasks/s (%s by EnqueueMany): a bound, not a measurement, to read the rates against when other load took CPUs. ",
			h.GoCPUus+h.RedisCPUus, m.GoCPUus+m.RedisCPUus, runtime.NumCPU(),
			thousands(float64(runtime.NumCPU())*1e6/(h.GoCPUus+h.RedisCPUus)), thousands(float64(runtime.NumCPU())*1e6/(m.GoCPUus+m.RedisCPUus)))
		p("Each run ends when the last reply arrived; the queue's stream then holds every task.\n\n")
	}
	if len(ai.Single) > 0 {
		p("| Single POST /v1/queues/{q}/tasks, open loop at %d/s | Target | HTTP (median of %d runs) | Enqueue at the same rate (baseline) | HTTP ÷ Enqueue | Met |\n|---|--:|--:|--:|--:|:-:|\n", ai.Rate, len(ai.Single))
		row := func(name string, target time.Duration, f func(*openLoopRun) time.Duration) {
			s, d := medianLat(ai.Single, f), medianLat(ai.Direct, f)
			t, ok := "—", "—"
			if target > 0 {
				t, ok = "≤ "+ms(target), met(s <= target)
			}
			p("| %s | %s | %s | %s | %.2f | %s |\n", name, t, ms(s), ms(d), float64(s)/float64(max(d, 1)), ok)
		}
		row("p50", 0, func(r *openLoopRun) time.Duration { return r.P50 })
		row("p90", 0, func(r *openLoopRun) time.Duration { return r.P90 })
		row("p99", apiP99Target, func(r *openLoopRun) time.Duration { return r.P99 })
		row("p99.9", 0, func(r *openLoopRun) time.Duration { return r.P999 })
		row("max", 0, func(r *openLoopRun) time.Duration { return r.Max })
		cost := func(rs []*openLoopRun, f func(*result) float64) float64 {
			return medianFloat(mapRuns(rs, func(r *openLoopRun) float64 { return f(r.Res) }))
		}
		p("\n%s requests a run after %v of warm-up at the same rate (not counted); one goroutine per request, started at its scheduled time (every 1/%d s) whatever became of the earlier ones, ",
			thousands(float64(ai.Single[0].N)), ai.Warm, ai.Rate)
		p("so a slow reply delays no later request; latency counts from the scheduled time to the end of the reply (HTTP) or the return of `Enqueue`. ")
		med := func(rs []*openLoopRun, f func(*openLoopRun) time.Duration) string { return ms(medianLat(rs, f)) }
		p("The generator's own lateness (actual − scheduled send; it waits with nanosleep on a thread of its own), in those figures: p50 HTTP %s, Enqueue %s; p99 HTTP %s, Enqueue %s. ",
			med(ai.Single, func(r *openLoopRun) time.Duration { return r.LateP50 }), med(ai.Direct, func(r *openLoopRun) time.Duration { return r.LateP50 }),
			med(ai.Single, func(r *openLoopRun) time.Duration { return r.LateP99 }), med(ai.Direct, func(r *openLoopRun) time.Duration { return r.LateP99 }))
		p("From the actual send instead (service time, what a closed-loop client would see): p50 HTTP %s, Enqueue %s; p99 HTTP %s, Enqueue %s. ",
			med(ai.Single, func(r *openLoopRun) time.Duration { return r.SvcP50 }), med(ai.Direct, func(r *openLoopRun) time.Duration { return r.SvcP50 }),
			med(ai.Single, func(r *openLoopRun) time.Duration { return r.SvcP99 }), med(ai.Direct, func(r *openLoopRun) time.Duration { return r.SvcP99 }))
		p("Achieved rate HTTP %.0f/s, Enqueue %.0f/s; at most %d HTTP requests in flight at once. ",
			medianFloat(mapRuns(ai.Single, func(r *openLoopRun) float64 { return r.Rate })), medianFloat(mapRuns(ai.Direct, func(r *openLoopRun) float64 { return r.Rate })),
			slices.Max(mapInt(ai.Single, func(r *openLoopRun) int64 { return r.MaxInFlight })))
		p("Per request (medians; Go CPU includes the generator and, for HTTP, the client): Go CPU %.1f µs HTTP, %.1f µs Enqueue; Redis CPU %.1f µs and %.1f µs; Redis cmds %.2f and %.2f. ",
			cost(ai.Single, func(r *result) float64 { return r.GoCPUus }), cost(ai.Direct, func(r *result) float64 { return r.GoCPUus }),
			cost(ai.Single, func(r *result) float64 { return r.RedisCPUus }), cost(ai.Direct, func(r *result) float64 { return r.RedisCPUus }),
			cost(ai.Single, func(r *result) float64 { return r.Cmds }), cost(ai.Direct, func(r *result) float64 { return r.Cmds }))
		p99s := func(rs []*openLoopRun) string {
			s := make([]string, len(rs))
			for i, r := range rs {
				s[i] = ms(r.P99)
			}
			return strings.Join(s, ", ")
		}
		p("p99 of each run, in pair order: HTTP %s; Enqueue %s. Other load (cores) HTTP %s; Enqueue %s.\n\n",
			p99s(ai.Single), p99s(ai.Direct),
			otherList(mapRes(ai.Single)), otherList(mapRes(ai.Direct)))
	}
	for _, s := range ai.Errs {
		p("- failed: %s\n", s)
	}
}

func mapRuns(rs []*openLoopRun, f func(*openLoopRun) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

func mapInt(rs []*openLoopRun, f func(*openLoopRun) int64) []int64 {
	out := make([]int64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

func mapRes(rs []*openLoopRun) []*result {
	out := make([]*result, len(rs))
	for i, r := range rs {
		out[i] = r.Res
	}
	return out
}

func otherList(rs []*result) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = fmt.Sprintf("%.2f", r.Other)
	}
	return strings.Join(s, ", ")
}
