package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/worker"
)

// noop is the no-op task of every throughput measurement.
type noop struct {
	N int `msgpack:"n"`
}

func (noop) Kind() string { return "noop" }

// stamped carries its enqueue wall time, for the latency measurement.
type stamped struct {
	T int64 `msgpack:"t"` // time.Now().UnixNano() just before Enqueue
}

func (stamped) Kind() string { return "stamped" }

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// snap is the state of the counters a measurement reads before and after.
type snap struct {
	at       time.Time
	redisCPU float64          // seconds, used_cpu_sys + used_cpu_user
	calls    map[string]int64 // commandstats calls per command
	usec     map[string]int64 // commandstats usec per command
	goCPU    time.Duration    // this process' user + system CPU
	busy     time.Duration    // the machine's busy CPU time (/proc/stat), all processes
}

// machineBusy returns the CPU time all processes used so far: the busy
// columns of /proc/stat's cpu line (user nice system irq softirq steal).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system (idle iowait) irq softirq steal
		n, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// otherCores is how many cores processes other than the bench and its Redis
// kept busy on average between two snapshots.
func otherCores(before, after snap) float64 {
	wall := after.at.Sub(before.at)
	if wall <= 0 || after.busy == 0 {
		return 0
	}
	other := (after.busy - before.busy) - (after.goCPU - before.goCPU) - time.Duration((after.redisCPU-before.redisCPU)*float64(time.Second))
	return max(float64(other)/float64(wall), 0)
}

func goCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	d := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if pid := childPid.Load(); pid != 0 {
		d += procCPU(pid) // a worker subprocess of the cancel phase
	}
	if pids := drainPids.Load(); pids != nil {
		for _, pid := range *pids {
			d += procCPU(pid) // the worker subprocesses of the two-process drain
		}
	}
	return d
}

func takeSnap(ctx context.Context, rdb *redis.Client) (snap, error) {
	s := snap{calls: map[string]int64{}, usec: map[string]int64{}}
	info, err := rdb.Info(ctx, "cpu", "commandstats").Result()
	s.at, s.goCPU, s.busy = time.Now(), goCPU(), machineBusy()
	if err != nil {
		return s, fmt.Errorf("INFO cpu commandstats: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "used_cpu_sys:"); ok {
			f, _ := strconv.ParseFloat(v, 64)
			s.redisCPU += f
		} else if v, ok := strings.CutPrefix(line, "used_cpu_user:"); ok {
			f, _ := strconv.ParseFloat(v, 64)
			s.redisCPU += f
		} else if rest, ok := strings.CutPrefix(line, "cmdstat_"); ok {
			name, fields, ok := strings.Cut(rest, ":")
			if !ok {
				continue
			}
			for _, f := range strings.Split(fields, ",") {
				if v, ok := strings.CutPrefix(f, "calls="); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					s.calls[name] = n
				} else if v, ok := strings.CutPrefix(f, "usec="); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					s.usec[name] = n
				}
			}
		}
	}
	return s, nil
}

// result is one measured phase.
type result struct {
	Name     string
	Tasks    int
	Dur      time.Duration
	Rate     float64 // tasks/s
	Settings string

	RedisCPUus float64            // Redis CPU µs per task
	GoCPUus    float64            // bench process CPU µs per task (client and worker side)
	Other      float64            // cores other processes kept busy meanwhile
	Cmds       float64            // Redis commands per task (scripts' inner commands included)
	Evalsha    float64            // EVALSHA calls per task
	ByCmd      map[string]float64 // commands per task by name
	UsecByCmd  map[string]float64 // commandstats µs per task by name (a script's includes its commands')

	Lat *latency // the latency phase only
	Sem *semInfo // the task-semantics phases only

	Label  string    // the table's row name
	Target float64   // tasks/s
	Runs   []float64 // tasks/s of every run the row is the median of

	Key  string // what the issue 20 targets look the row up by (see issue20.go)
	Side string // "enqueue" or "drain": which side of the ceiling it is a fraction of; "" none
}

func (r *result) brief() string {
	return fmt.Sprintf("%.0f tasks/s (%d in %v), Redis CPU %.2f µs/task, Go CPU %.2f µs/task, %.2f Redis cmds/task, %.4f EVALSHA/task, other processes %.2f cores",
		r.Rate, r.Tasks, r.Dur.Round(time.Millisecond), r.RedisCPUus, r.GoCPUus, r.Cmds, r.Evalsha, r.Other)
}

type latency struct {
	Rate                   float64 // achieved enqueue rate
	P50, P90, P99, Max     time.Duration
	Samples, Warmup        int
	Duration               time.Duration
	Concurrency, Batch     int
	EnqueueP50, EnqueueP99 time.Duration
}

// own counts the commands the bench itself sends during a measured phase
// (end-condition polls), to take them out of the per-task counts.
type own map[string]int64

// finish turns two snapshots into a result.
func finish(name string, tasks int, before, after snap, mine own) *result {
	r := &result{Name: name, Tasks: tasks, Dur: after.at.Sub(before.at), ByCmd: map[string]float64{}, UsecByCmd: map[string]float64{}}
	r.Rate = float64(tasks) / r.Dur.Seconds()
	r.RedisCPUus = (after.redisCPU - before.redisCPU) * 1e6 / float64(tasks)
	r.GoCPUus = float64(after.goCPU-before.goCPU) / float64(time.Microsecond) / float64(tasks)
	r.Other = otherCores(before, after)
	var total int64
	for cmd, n := range after.calls {
		if cmd == "info" {
			continue // the snapshots themselves
		}
		d := n - before.calls[cmd] - mine[cmd]
		if d <= 0 {
			continue
		}
		total += d
		r.ByCmd[cmd] = float64(d) / float64(tasks)
		if cmd != "xpending" || mine[cmd] == 0 {
			r.UsecByCmd[cmd] = float64(after.usec[cmd]-before.usec[cmd]) / float64(tasks)
		} else { // our polls' time cannot be told apart; count it by share of calls
			all := n - before.calls[cmd]
			r.UsecByCmd[cmd] = float64(after.usec[cmd]-before.usec[cmd]) * float64(d) / float64(all) / float64(tasks)
		}
	}
	r.Cmds = float64(total) / float64(tasks)
	r.Evalsha = r.ByCmd["evalsha"]
	return r
}

// env is what every phase works with.
type env struct {
	addr    string
	admin   *redis.Client      // snapshots
	in      *inspect.Inspector // queue counts, cleanup
	flush   bool               // FLUSHALL between phases allowed
	logger  *slog.Logger
	profDir string

	settleMax time.Duration // how long settle waits at most
	progress  io.Writer
}

// settleCores is the load of other processes (in cores) below which a
// measurement starts without waiting.
const settleCores = 0.3

// settle waits, up to e.settleMax, until other processes on the machine use
// less than settleCores, so that a measurement does not share the CPUs with
// someone else's build or tests. It measures over 250 ms windows.
func (e *env) settle(ctx context.Context) {
	if e.settleMax <= 0 {
		return
	}
	deadline := time.Now().Add(e.settleMax)
	said := false
	for {
		a, err := takeSnap(ctx, e.admin)
		if err != nil || a.busy == 0 {
			return
		}
		time.Sleep(250 * time.Millisecond)
		b, err := takeSnap(ctx, e.admin)
		if err != nil {
			return
		}
		other := otherCores(a, b)
		if other < settleCores {
			return
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(e.progress, "  other processes still use %.2f cores after %v; measuring anyway\n", other, e.settleMax)
			return
		}
		if !said {
			fmt.Fprintf(e.progress, "  waiting for other processes to quiet down (%.2f cores busy)\n", other)
			said = true
		}
	}
}

func (e *env) newRedis() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: e.addr})
}

func (e *env) queue(phase string) string {
	return "bench-" + phase + "-" + randHex(4)
}

// reset clears the server after a phase: FLUSHALL on the bench's own server
// (or with --flush), else only the phase's queue.
func (e *env) reset(ctx context.Context, queue string) error {
	if e.flush {
		return e.admin.FlushAll(ctx).Err()
	}
	return e.in.DeleteQueue(ctx, queue, true)
}

// measure runs body between two snapshots. With a profile name (and
// --cpuprofile) the CPU profile covers exactly that span, into
// DIR/<profile>.pprof.
func (e *env) measure(ctx context.Context, name string, tasks int, profile string, body func() (own, error)) (*result, error) {
	e.settle(ctx)
	runtime.GC() // no garbage of the set-up is collected in the measured phase
	if profile != "" && e.profDir != "" {
		out, err := os.Create(filepath.Join(e.profDir, profile+".pprof"))
		if err != nil {
			return nil, err
		}
		defer out.Close()
		if err := pprof.StartCPUProfile(out); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile() // runs before out.Close
	}
	before, err := takeSnap(ctx, e.admin)
	if err != nil {
		return nil, err
	}
	mine, err := body()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	after, err := takeSnap(ctx, e.admin)
	if err != nil {
		return nil, err
	}
	return finish(name, tasks, before, after, mine), nil
}

// profName is the profile of a run: name when profiled, else none.
func profName(profiled bool, name string) string {
	if profiled {
		return name
	}
	return ""
}

func noopSpecs(n int, queue string) []client.Spec {
	opts := &client.EnqueueOpts{Queue: queue}
	specs := make([]client.Spec, n)
	for i := range specs {
		specs[i] = client.Spec{Args: noop{N: i}, Opts: opts}
	}
	return specs
}

// enqueueMany measures calls EnqueueMany calls of n tasks each (one call
// for the table; several for a profile with enough samples).
func (e *env) enqueueMany(ctx context.Context, n, calls int, profiled bool) (*result, error) {
	c, q, closeSession, err := e.session(ctx, "many")
	if err != nil {
		return nil, err
	}
	defer closeSession()
	specs := noopSpecs(n, q)
	if _, err := c.EnqueueMany(ctx, noopSpecs(500, q)); err != nil { // warm the pool
		return nil, err
	}
	r, err := e.measure(ctx, "EnqueueMany", n*calls, profName(profiled, "enqueuemany"), func() (own, error) {
		for i := 0; i < calls; i++ {
			hs, err := c.EnqueueMany(ctx, specs)
			if err != nil {
				return nil, err
			}
			if len(hs) != n {
				return nil, fmt.Errorf("EnqueueMany returned %d handles for %d tasks", len(hs), n)
			}
		}
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	if got, err := e.in.Queue(ctx, q); err != nil || got.StreamLength != int64(n*calls+500) {
		return nil, fmt.Errorf("EnqueueMany: stream holds %d entries, want %d (%v)", got.StreamLength, n*calls+500, err)
	}
	r.Settings = fmt.Sprintf("one call of %d tasks", n)
	if calls > 1 {
		r.Settings = fmt.Sprintf("%d calls of %d tasks", calls, n)
	}
	return r, nil
}

// enqueueSeq measures n Enqueue calls from one goroutine.
func (e *env) enqueueSeq(ctx context.Context, n int, profiled bool) (*result, error) {
	c, q, closeSession, err := e.session(ctx, "seq")
	if err != nil {
		return nil, err
	}
	defer closeSession()
	opts := &client.EnqueueOpts{Queue: q}
	for i := 0; i < 200; i++ { // warm up
		if _, err := c.Enqueue(ctx, noop{N: i}, opts); err != nil {
			return nil, err
		}
	}
	r, err := e.measure(ctx, "Enqueue, 1 goroutine", n, profName(profiled, "enqueue-seq"), func() (own, error) {
		for i := 0; i < n; i++ {
			if _, err := c.Enqueue(ctx, noop{N: i}, opts); err != nil {
				return nil, err
			}
		}
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	r.Settings = "sequential calls"
	return r, nil
}

// enqueueConc measures n Enqueue calls spread over g goroutines.
func (e *env) enqueueConc(ctx context.Context, n, g int, profiled bool) (*result, error) {
	c, q, closeSession, err := e.session(ctx, "conc")
	if err != nil {
		return nil, err
	}
	defer closeSession()
	opts := &client.EnqueueOpts{Queue: q}
	run := func(total int) error {
		var wg sync.WaitGroup
		var first atomic.Value
		per := total / g
		for w := 0; w < g; w++ {
			k := per
			if w == g-1 {
				k = total - per*(g-1)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < k; i++ {
					if _, err := c.Enqueue(ctx, noop{N: i}, opts); err != nil {
						first.CompareAndSwap(nil, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err, _ := first.Load().(error); err != nil {
			return err
		}
		return nil
	}
	if err := run(g * 50); err != nil { // warm up
		return nil, err
	}
	r, err := e.measure(ctx, fmt.Sprintf("Enqueue, %d goroutines", g), n, profName(profiled, "enqueue-concurrent"), func() (own, error) {
		return nil, run(n)
	})
	if err != nil {
		return nil, err
	}
	r.Settings = fmt.Sprintf("%d goroutines × %d calls", g, n/g)
	return r, nil
}

// drainCfg is one worker setting of the drain measurement.
type drainCfg struct {
	Concurrency, FetchBatch int
}

// defaultCfg is the drain with the worker's defaults: worker.Config sets
// only Queues (and the bench's Logger); BlockTimeout stays at its default
// too, since only the blocking read on an empty stream waits for it.
var defaultCfg = drainCfg{}

func (d drainCfg) String() string {
	if d == defaultCfg {
		return "default settings (worker.Config sets only Queues and Logger)"
	}
	return fmt.Sprintf("Concurrency %d, FetchBatch %d", d.Concurrency, d.FetchBatch)
}

const blockTimeout = 250 * time.Millisecond

// drain pre-enqueues n tasks, then measures one worker draining them, from
// Start until every task's outcome is recorded: the handler ran n times and
// the group's pending count is back to 0 (complete.lua records the outcome and
// acks in one step, so nothing is pending once every outcome is written).
func (e *env) drain(ctx context.Context, n int, dc drainCfg, profiled bool) (*result, error) {
	return e.drainWith(ctx, n, dc, profName(profiled, "drain"), nil)
}

// drainWith is drain with a worker that reports its events to observers,
// profiled into DIR/profile.pprof when profile is set (and --cpuprofile).
func (e *env) drainWith(ctx context.Context, n int, dc drainCfg, profile string, observers []worker.Observer) (*result, error) {
	prdb := e.newRedis()
	defer prdb.Close()
	c, err := client.New(context.Background(), prdb, &client.Config{Logger: e.logger})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	q := e.queue("drain")
	defer e.reset(ctx, q)
	for done := 0; done < n; done += 10000 {
		if _, err := c.EnqueueMany(ctx, noopSpecs(min(10000, n-done), q)); err != nil {
			return nil, err
		}
	}

	wopts := &redis.Options{Addr: e.addr, PoolSize: 32}
	if dc == defaultCfg {
		wopts.PoolSize = 0 // with the worker's defaults, go-redis' too
	}
	wrdb := redis.NewClient(wopts)
	defer wrdb.Close()
	w, err := e.newWorker(wrdb, q, dc, observers...)
	if err != nil {
		return nil, err
	}
	var handled atomic.Int64
	allHandled := make(chan struct{})
	worker.Handle(w, func(ctx context.Context, a noop) (struct{}, error) {
		if handled.Add(1) == int64(n) {
			close(allHandled)
		}
		return struct{}{}, nil
	})
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(sctx)
	}()
	r, err := e.measure(ctx, "End-to-end drain", n, profile, func() (own, error) {
		if err := w.Start(ctx); err != nil {
			return nil, err
		}
		select {
		case <-allHandled:
		case <-time.After(2 * time.Minute):
			return nil, fmt.Errorf("handled %d of %d tasks in 2 minutes", handled.Load(), n)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return e.waitAcked(ctx, q, own{})
	})
	if err != nil {
		return nil, err
	}
	// Check the end state: every entry read by the group, none pending,
	// nothing retried or dead.
	end, err := e.in.Queue(ctx, q)
	if err != nil {
		return nil, err
	}
	// Every task succeeded once; the group may have read more entries
	// than tasks, since an entry handed back (the read-ahead's 10 ms
	// bound) is read again as a new entry.
	if end.Succeeded != int64(n) || end.Read < int64(n) || end.Running != 0 || end.Waiting != 0 || end.Scheduled != 0 || end.Dead != 0 {
		return nil, fmt.Errorf("drain end state: %+v, want %d succeeded, at least %d read, running 0, waiting 0, scheduled 0, dead 0", end, n, n)
	}
	if got := handled.Load(); got != int64(n) {
		return nil, fmt.Errorf("handler ran %d times for %d tasks", got, n)
	}
	r.Settings = dc.String()
	return r, nil
}

// latencyRun enqueues at rate tasks/s for dur from one paced producer while a
// running worker records enqueue→handler-start times.
func (e *env) latencyRun(ctx context.Context, rate int, dur, warm time.Duration, dc drainCfg) (*result, error) {
	prdb := e.newRedis()
	defer prdb.Close()
	c, err := client.New(context.Background(), prdb, &client.Config{Logger: e.logger})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	q := e.queue("latency")
	defer e.reset(ctx, q)

	wrdb := e.newRedis()
	defer wrdb.Close()
	w, err := e.newWorker(wrdb, q, dc)
	if err != nil {
		return nil, err
	}
	total := int(float64(rate)*(dur+warm).Seconds()) + 16
	samples := make([]int64, total)
	var got atomic.Int64
	worker.Handle(w, func(ctx context.Context, a stamped) (struct{}, error) {
		d := time.Now().UnixNano() - a.T
		if i := got.Add(1) - 1; int(i) < len(samples) {
			samples[i] = d
		}
		return struct{}{}, nil
	})
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(sctx)
	}()
	time.Sleep(100 * time.Millisecond) // the fetch loop is blocked in XREADGROUP
	opts := &client.EnqueueOpts{Queue: q}

	// produce enqueues at rate for d, open loop: a ticker paces it, and each
	// tick sends every task due by then, so a late tick (the goroutine was not
	// scheduled, or an Enqueue was slow) does not lower the rate.
	produce := func(d time.Duration, enq []time.Duration) (int, []time.Duration, error) {
		period := time.Second / time.Duration(rate)
		want := int(d / period)
		t := time.NewTicker(period)
		defer t.Stop()
		begin := time.Now()
		sent := 0
		for sent < want {
			now := <-t.C
			due := min(int(now.Sub(begin)/period)+1, want)
			for ; sent < due; sent++ {
				start := time.Now()
				if _, err := c.Enqueue(ctx, stamped{T: start.UnixNano()}, opts); err != nil {
					return sent, enq, err
				}
				enq = append(enq, time.Since(start))
			}
		}
		return sent, enq, nil
	}
	warmSent, _, err := produce(warm, nil)
	if err != nil {
		return nil, err
	}
	if err := waitCount(ctx, &got, int64(warmSent)); err != nil {
		return nil, err
	}
	var sent int
	var enq []time.Duration
	var produced time.Duration
	r, err := e.measure(ctx, "Latency", 1, "", func() (own, error) {
		var err error
		pstart := time.Now()
		sent, enq, err = produce(dur, make([]time.Duration, 0, rate*int(dur/time.Second+1)))
		produced = time.Since(pstart)
		if err != nil {
			return nil, err
		}
		if err := waitCount(ctx, &got, int64(warmSent+sent)); err != nil {
			return nil, err
		}
		return e.waitAcked(ctx, q, own{})
	})
	if err != nil {
		return nil, err
	}
	if int(got.Load()) > len(samples) {
		return nil, fmt.Errorf("latency: %d handler calls for %d tasks", got.Load(), warmSent+sent)
	}
	lat := samples[warmSent : warmSent+sent]
	r2 := finishPer(r, sent)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	sort.Slice(enq, func(i, j int) bool { return enq[i] < enq[j] })
	pct := func(p float64) time.Duration { return time.Duration(lat[int(p*float64(len(lat)-1))]) }
	epct := func(p float64) time.Duration { return enq[int(p*float64(len(enq)-1))] }
	r2.Lat = &latency{
		Rate:        float64(sent) / produced.Seconds(),
		P50:         pct(0.50),
		P90:         pct(0.90),
		P99:         pct(0.99),
		Max:         time.Duration(lat[len(lat)-1]),
		Samples:     sent,
		Warmup:      warmSent,
		Duration:    dur,
		Concurrency: dc.Concurrency,
		Batch:       dc.FetchBatch,
		EnqueueP50:  epct(0.50),
		EnqueueP99:  epct(0.99),
	}
	r2.Settings = fmt.Sprintf("%d tasks/s for %v (after %v warm-up), one producer; worker %s", rate, dur, warm, dc)
	return r2, nil
}

// finishPer rescales a result measured with tasks=1 to per-task figures.
func finishPer(r *result, tasks int) *result {
	out := *r
	out.Tasks = tasks
	out.Rate = float64(tasks) / r.Dur.Seconds()
	f := float64(tasks)
	out.RedisCPUus /= f
	out.GoCPUus /= f
	out.Cmds /= f
	out.Evalsha /= f
	out.ByCmd = map[string]float64{}
	for k, v := range r.ByCmd {
		out.ByCmd[k] = v / f
	}
	out.UsecByCmd = map[string]float64{}
	for k, v := range r.UsecByCmd {
		out.UsecByCmd[k] = v / f
	}
	return &out
}

func waitCount(ctx context.Context, c *atomic.Int64, want int64) error {
	deadline := time.Now().Add(30 * time.Second)
	for c.Load() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("handler ran %d times, want %d", c.Load(), want)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// waitAcked polls the group's pending count until it is 0, counting its own
// commands in mine (Inspector.Running sends one XPENDING).
func (e *env) waitAcked(ctx context.Context, q string, mine own) (own, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		mine["xpending"]++
		running, err := e.in.Running(ctx, q)
		if err != nil {
			return nil, err
		}
		if running == 0 {
			return mine, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d entries still pending after 30 s", running)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// session opens what a measurement needs: a Redis connection, a client and
// a fresh queue named after name; done closes them and removes the queue's
// keys.
func (e *env) session(ctx context.Context, name string) (c *client.Client, q string, done func(), err error) {
	rdb := e.newRedis()
	c, err = client.New(context.Background(), rdb, &client.Config{Logger: e.logger})
	if err != nil {
		_ = rdb.Close()
		return nil, "", nil, err
	}
	q = e.queue(name)
	return c, q, func() {
		e.reset(ctx, q)
		_ = c.Close()
		_ = rdb.Close()
	}, nil
}

// newWorker returns a worker of queue q with the settings dc, reporting its
// events to observers.
func (e *env) newWorker(rdb redis.UniversalClient, q string, dc drainCfg, observers ...worker.Observer) (*worker.Worker, error) {
	if dc == defaultCfg {
		return worker.New(context.Background(), rdb, &worker.Config{
			Queues:    map[string]int{q: 1},
			Logger:    e.logger,
			Observers: observers,
		})
	}
	return worker.New(context.Background(), rdb, &worker.Config{
		Queues:       map[string]int{q: 1},
		Concurrency:  dc.Concurrency,
		FetchBatch:   dc.FetchBatch,
		BlockTimeout: blockTimeout,
		Logger:       e.logger,
		Observers:    observers,
	})
}
