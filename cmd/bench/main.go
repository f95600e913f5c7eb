// Command bench reproduces the benchmark table of docs/benchmarks.md in one
// run: redis-benchmark baselines, enqueue throughput (EnqueueMany, sequential
// and concurrent Enqueue), end-to-end drain throughput of one worker (and
// its cost with Prometheus metrics on against off, same run),
// enqueue→handler latency at a steady rate, and the task semantics:
// parent end → continuation start latency, cancel propagation to a running
// handler (worker in this process and in a subprocess), a chain of
// continuations, and the HTTP API (internal/httpapi): batches of tasks
// against EnqueueMany, single POSTs at a fixed rate against Enqueue; and
// sharded queues (issue 21) on local Redis Clusters it starts: each
// master's share of a 12-shard queue's tasks, keys and Redis CPU against a
// plain queue, per-key order across shards, and durable enqueue (WAIT)
// against plain enqueue on a cluster with replicas.
//
//	go run ./cmd/bench                          # print the results as markdown
//	go run ./cmd/bench --out docs/benchmarks.md # rewrite the doc's results section
//	go run ./cmd/bench --quick                  # smoke run, a few seconds
//
// By default it starts its own redis-server on a free loopback port (no
// persistence, a temporary directory) and stops it at the end or on SIGINT.
// With --redis ADDR it uses that server and touches only its own queues'
// keys, unless --flush allows FLUSHALL between phases.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/inspect"
)

// sizes are the workloads of one run.
type sizes struct {
	Reps         int // runs per measurement; the median by tasks/s is reported
	Many         int
	Seq          int
	Conc         int
	Goroutines   int
	Drain        int
	DrainCfgs    []drainCfg
	LatRate      int
	LatDur       time.Duration
	LatWarm      time.Duration
	BaselineReqs int

	ContN, ContWarm, ContRate int // continuation latency: samples, warm-up, at most per second
	CancelN, CancelWarm       int // cancel propagation samples, per worker placement
	Chain                     int // continuations in the chain
	Group                     int // members of the fork/join measurement
	RateCalls                 int // Allow calls per measurement
	RateDur                   time.Duration
	Soak, SoakRate            int // tasks through the soak, offered per second
	BatchItems                int // items through Batch and as single tasks
	PartKeys                  int // partition keys (10 tasks each)
	MetricsPairs              int // drains with metrics off and on, alternating

	APIBatch, APIBatchTasks, APIClients int           // HTTP batch: tasks a request, tasks a run, client goroutines
	APIRate, APILatReps                 int           // single POSTs per second; runs of each (HTTP, Enqueue)
	APIDur, APIWarm                     time.Duration // single POSTs: measured, then warm-up before it

	Shards shardCfg // the sharded queue on a local cluster (issue 21)
	Wait   waitCfg  // durable enqueue on a cluster with replicas (issue 21)
}

var full = sizes{
	Reps:       5,
	Many:       100000,
	Seq:        20000,
	Conc:       100000,
	Goroutines: 16,
	Drain:      100000,
	DrainCfgs: []drainCfg{
		{100, 256}, // the defaults before issue 20
		{256, 256},
		{512, 512},
		{1024, 512},
		{1024, 1024},
		{2048, 1024},
		{2048, 2048},
		{4096, 1024},
	},
	LatRate:      1000,
	LatDur:       5 * time.Second,
	LatWarm:      500 * time.Millisecond,
	BaselineReqs: 200000,
	ContN:        2000,
	ContWarm:     200,
	ContRate:     500,
	CancelN:      500,
	CancelWarm:   20,
	Chain:        1000,
	Group:        10000,
	RateCalls:    100000,
	RateDur:      10 * time.Second,
	Soak:         1000000,
	SoakRate:     25000,
	BatchItems:   100000,
	PartKeys:     10000,
	MetricsPairs: 10,

	APIBatch:      1000,
	APIBatchTasks: 200000,
	APIClients:    4,
	APIRate:       1000,
	APILatReps:    3,
	APIDur:        10 * time.Second,
	APIWarm:       time.Second,

	Shards: shardCfg{Masters: 6, Shards: 12, Tasks: 1000000, Producers: 4, Batch: 1000, Backlog: 100000,
		Workers: 2, Conc: 1024, FetchBatch: 512, OrderKeys: 2000, OrderPer: 10, Idle: 10 * time.Second, Reps: 3},
	Wait: waitCfg{Masters: 3, Many: 100000, Producers: 4, Batch: 1000, Conc: 16, ConcN: 50000, Seq: 5000, Timeout: time.Second, Reps: 3},
}

var quick = sizes{
	Reps:         1,
	Many:         10000,
	Seq:          2000,
	Conc:         10000,
	Goroutines:   16,
	Drain:        10000,
	DrainCfgs:    []drainCfg{{256, 256}},
	LatRate:      1000,
	LatDur:       time.Second,
	LatWarm:      100 * time.Millisecond,
	BaselineReqs: 20000,
	ContN:        200,
	ContWarm:     20,
	ContRate:     500,
	CancelN:      50,
	CancelWarm:   5,
	Chain:        100,
	Group:        2000,
	RateCalls:    10000,
	RateDur:      2 * time.Second,
	Soak:         20000,
	SoakRate:     10000,
	BatchItems:   10000,
	PartKeys:     1000,
	MetricsPairs: 1,

	APIBatch:      1000,
	APIBatchTasks: 20000,
	APIClients:    4,
	APIRate:       1000,
	APILatReps:    1,
	APIDur:        2 * time.Second,
	APIWarm:       200 * time.Millisecond,

	Shards: shardCfg{Masters: 6, Shards: 12, Tasks: 20000, Producers: 4, Batch: 1000, Backlog: 100000,
		Workers: 2, Conc: 1024, FetchBatch: 512, OrderKeys: 200, OrderPer: 10, Idle: 2 * time.Second, Reps: 1},
	Wait: waitCfg{Masters: 3, Many: 10000, Producers: 4, Batch: 1000, Conc: 16, ConcN: 5000, Seq: 1000, Timeout: time.Second, Reps: 1},
}

type options struct {
	redisAddr string
	flush     bool
	out       string
	quick     bool
	profDir   string
	sweep     string
	only      map[string]bool // phases to run; nil: all
	settle    time.Duration
	command   string // the command line, for the report

	metricsPairs int // --metrics-pairs; 0: the sizes' own
	reps         int // --reps; 0: the sizes' own
	payload      int // --ceiling-payload; 0: the tasks' envelope size, read back
	abAgainst    string
	abRounds     int
	jsonOut      string

	shardTasks int // --shard-tasks; 0: the sizes' own
	shardReps  int // --shard-reps; 0: the sizes' own
	orderKeys  int // --shard-order-keys; -1: the sizes' own
}

// ownCluster is the Redis Cluster the shards phase runs, stopped on SIGINT.
var ownCluster atomic.Pointer[cluster]

// phases are the parts of a run, for --only.
var phases = []string{"baseline", "ceiling", "many", "seq", "conc", "drain", "procs", "metrics", "latency", "cont", "cancel", "chain", "groups", "ratelimit", "delayed", "batch", "partition", "soak", "apibatch", "apilatency", "uploadsmall", "upload1g", "shards", "durable"}

// profileName is the file name (without .pprof) of each profiled phase.
var profileName = map[string]string{"many": "enqueuemany", "seq": "enqueue-seq", "conc": "enqueue-concurrent", "drain": "drain"}

func main() {
	var o options
	flag.StringVar(&o.redisAddr, "redis", "", "use the Redis at `ADDR` instead of starting a redis-server")
	flag.BoolVar(&o.flush, "flush", false, "allow FLUSHALL between phases on the --redis server (always done on the bench's own server)")
	flag.StringVar(&o.out, "out", "", "rewrite the results section (between the bench markers) of the markdown `FILE`")
	flag.BoolVar(&o.quick, "quick", false, "small smoke run (a few seconds)")
	flag.StringVar(&o.profDir, "cpuprofile", "", "after each throughput measurement, run it once more under the CPU profiler into `DIR`/{enqueuemany,enqueue-seq,enqueue-concurrent,drain}.pprof")
	flag.StringVar(&o.sweep, "drain-sweep", "", "worker settings the drain tries, as `CxB,...` (Concurrency x FetchBatch); default: a built-in list")
	flag.DurationVar(&o.settle, "settle", 20*time.Second, "before each measured run, wait up to `D` for other processes to use under 0.3 cores (0: never wait; --quick never waits)")
	flag.IntVar(&o.metricsPairs, "metrics-pairs", 0, "pairs of drains (metrics off, on) in the metrics phase; default 10 (1 with --quick)")
	only := flag.String("only", "", "run only these comma-separated `PHASES` of "+strings.Join(phases, ",")+" (not with --out)")
	flag.IntVar(&o.reps, "reps", 0, "runs per measurement (the median is reported); default 5 (1 with --quick)")
	flag.IntVar(&o.payload, "ceiling-payload", 0, "`BYTES` of the ceiling's entries and the redis-benchmark payload; default: the size of the tasks' envelope, read back from the stream")
	flag.StringVar(&o.abAgainst, "ab-against", "", "A/B: run this tree's bench and the same bench built on the library of git revision `REV` in turn, and print each figure's change")
	flag.IntVar(&o.abRounds, "ab-rounds", 5, "A/B: rounds (each side runs once per round, one run per measurement)")
	flag.StringVar(&o.jsonOut, "json", "", "also write the run's figures (rows' tasks/s, latency percentiles) as JSON to `FILE` (what --ab-against compares)")
	flag.IntVar(&o.shardTasks, "shard-tasks", 0, "tasks a run of the shards phase pushes through the sharded queue (and the plain one); default 1,000,000 (20,000 with --quick)")
	flag.IntVar(&o.shardReps, "shard-reps", 0, "runs of each queue in the shards phase, and rounds of its durable enqueue part (the median is reported); default 3 (1 with --quick)")
	flag.IntVar(&o.orderKeys, "shard-order-keys", -1, "partition keys (10 tasks each) of the shards phase's order check; 0 skips it; default 2000 (200 with --quick)")
	cancelWorker := flag.String(cancelWorkerFlag, "", "internal: run as the worker subprocess of the cancel phase, serving `QUEUE` on --redis")
	drainWorker := flag.String(drainWorkerFlag, "", "internal: run as a worker subprocess of the procs phase, serving `QUEUE` on --redis")
	flag.Parse()
	if *cancelWorker != "" {
		os.Exit(runCancelWorker(o.redisAddr, *cancelWorker))
	}
	if *drainWorker != "" {
		os.Exit(runDrainWorker(o.redisAddr, *drainWorker))
	}
	if *only != "" {
		o.only = map[string]bool{}
		for _, p := range strings.Split(*only, ",") {
			if !slices.Contains(phases, p) {
				fmt.Fprintf(os.Stderr, "bench: --only: unknown phase %q; phases are %s\n", p, strings.Join(phases, ","))
				os.Exit(2)
			}
			o.only[p] = true
		}
		if o.out != "" {
			fmt.Fprintln(os.Stderr, "bench: --only makes a partial table; it cannot be combined with --out")
			os.Exit(2)
		}
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	o.command = strings.TrimSpace("go run ./cmd/bench " + strings.Join(os.Args[1:], " "))
	if o.abAgainst != "" {
		if o.out != "" || o.abRounds < 1 {
			fmt.Fprintln(os.Stderr, "bench: --ab-against prints its own table: not with --out; --ab-rounds must be at least 1")
			os.Exit(2)
		}
		if err := runAB(o, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(o, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// run does one whole benchmark run and writes the markdown to stdout
// (and into o.out); progress goes to progress.
func run(o options, stdout, progress io.Writer) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// SIGINT/SIGTERM: stop our redis-server by pid and exit.
	var own atomic.Pointer[server]
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case s := <-sigs:
			fmt.Fprintf(progress, "bench: %v, stopping\n", s)
			cancel()
			removeUploadTemp()
			if srv := own.Load(); srv != nil {
				srv.stop()
			}
			ownCluster.Load().stop()
			os.Exit(130)
		case <-ctx.Done():
		}
	}()

	addr := o.redisAddr
	flush := o.flush
	if addr == "" {
		fmt.Fprintln(progress, "starting redis-server ...")
		srv, err := startServer()
		if err != nil {
			return err
		}
		own.Store(srv)
		defer srv.stop()
		addr, flush = srv.addr, true
		fmt.Fprintf(progress, "redis-server pid %d on %s\n", srv.cmd.Process.Pid, addr)
	}

	if o.profDir != "" {
		if err := os.MkdirAll(o.profDir, 0o755); err != nil {
			return err
		}
	}
	sz := full
	if o.quick {
		sz = quick
	}
	if o.metricsPairs > 0 {
		sz.MetricsPairs = o.metricsPairs
	}
	if o.reps > 0 {
		sz.Reps = o.reps
	}
	if o.shardTasks > 0 {
		sz.Shards.Tasks = o.shardTasks
	}
	if o.shardReps > 0 {
		sz.Shards.Reps = o.shardReps
		sz.Wait.Reps = o.shardReps
	}
	if o.orderKeys >= 0 {
		sz.Shards.OrderKeys = o.orderKeys
	}
	if o.sweep != "" {
		cfgs, err := parseSweep(o.sweep)
		if err != nil {
			return err
		}
		sz.DrainCfgs = cfgs
	}
	admin := redis.NewClient(&redis.Options{Addr: addr})
	defer admin.Close()
	e := &env{
		addr:    addr,
		admin:   admin,
		in:      inspect.New(admin),
		flush:   flush,
		logger:  slog.New(slog.NewTextHandler(progress, &slog.HandlerOptions{Level: slog.LevelWarn})),
		profDir: o.profDir,

		settleMax: o.settle,
		progress:  progress,
	}
	if o.quick {
		e.settleMax = 0
	}
	if flush {
		if err := admin.FlushAll(ctx).Err(); err != nil {
			return err
		}
	}

	if o.command == "" {
		o.command = "go run ./cmd/bench"
	}
	rep := &report{Quick: o.quick, Command: o.command, Sizes: sz, Started: time.Now()}
	rep.Machine = machine(ctx, admin, own.Load() != nil)
	fmt.Fprintln(progress, rep.Machine.line())

	step := func(what string) { fmt.Fprintf(progress, "%s  %s\n", time.Now().Format("15:04:05"), what) }

	want := func(phase string) bool { return o.only == nil || o.only[phase] }

	// The payload of the ceiling and of the issue 20 baselines: the size of
	// the envelope the Enqueue rows write (the largest N of EnqueueMany's).
	payload := o.payload
	if payload == 0 && (want("baseline") || want("ceiling")) {
		n, err := e.envelopeSize(ctx, sz.Many-1)
		if err != nil {
			return fmt.Errorf("read back a task's envelope: %w", err)
		}
		payload = n
		fmt.Fprintf(progress, "a no-op task's stream entry holds an envelope of %d bytes\n", n)
	}
	rep.CeilingPayload = payload

	if want("baseline") {
		for _, bc := range []struct{ n, clients, pipeline int }{
			{sz.BaselineReqs, 50, 1},
			{sz.BaselineReqs, 50, 16},
			{sz.Seq, 1, 1}, // one client's round trips: the bound of a sequential Enqueue
		} {
			label := fmt.Sprintf("XADD, %d clients, unpipelined", bc.clients)
			if bc.clients == 1 {
				label = "XADD, 1 client, unpipelined"
			}
			if bc.pipeline > 1 {
				label = fmt.Sprintf("XADD, %d clients, pipeline %d", bc.clients, bc.pipeline)
			}
			step("redis-benchmark " + label)
			e.settle(ctx)
			b := runBaseline(ctx, admin, addr, bc.n, bc.clients, bc.pipeline, label)
			if b.Err != "" {
				fmt.Fprintf(progress, "  baseline failed: %s\n", b.Err)
			} else {
				fmt.Fprintf(progress, "  %.0f requests/s, Redis CPU %.2f µs/request\n", b.RPS, b.RedisCPUus)
			}
			rep.Baselines = append(rep.Baselines, b)
			if flush {
				_ = admin.FlushAll(ctx).Err()
			}
		}
		step(fmt.Sprintf("redis-benchmark: EVALSHA of a one-XADD script -c 1, XADD -c 50 -P 16, %d-byte payload, %d runs each", payload, sz.Reps))
		b20, err := e.baselines20(ctx, sz.Seq, sz.BaselineReqs, sz.Reps, payload)
		if err != nil {
			fmt.Fprintf(progress, "  baselines failed: %v\n", err)
			rep.SemErrs = append(rep.SemErrs, "baselines: "+err.Error())
		}
		rep.Base20 = b20
		if flush {
			_ = admin.FlushAll(ctx).Err()
		}
	}

	// clean runs f, and when other processes shared the CPUs during the run
	// (and --settle is on) runs it again, up to twice; it keeps the run with
	// the least other load.
	clean := func(f func() (*result, error)) (*result, error) {
		var best *result
		for try := 0; try < 3; try++ {
			r, err := f()
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(progress, "  %s\n", r.brief())
			if best == nil || r.Other < best.Other {
				best = r
			}
			if e.settleMax <= 0 || r.Other < settleCores {
				break
			}
			fmt.Fprintf(progress, "  other processes used %.2f cores during the run; running it again\n", r.Other)
		}
		return best, nil
	}
	rerun := func(what string, f func() (*result, error)) (*result, error) {
		var rs []*result
		for i := 0; i < sz.Reps; i++ {
			step(fmt.Sprintf("%s (run %d of %d)", what, i+1, sz.Reps))
			r, err := clean(f)
			if err != nil {
				return nil, err
			}
			rs = append(rs, r)
		}
		return median(rs), nil
	}
	// row measures one table row; with --cpuprofile it then runs the
	// measurement once more under the profiler, outside the table.
	row := func(phase, key, side, what string, target float64, label string, f func(profiled bool) (*result, error)) error {
		if !want(phase) {
			return nil
		}
		r, err := rerun(what, func() (*result, error) { return f(false) })
		if err != nil {
			return err
		}
		r.Target, r.Label, r.Key, r.Side = target, label, key, side
		rep.Rows = append(rep.Rows, r)
		if o.profDir != "" {
			step("profiled " + what + " (not in the table)")
			pr, err := f(true)
			if err != nil {
				return err
			}
			fmt.Fprintf(progress, "  %s -> %s\n", pr.brief(), filepath.Join(o.profDir, profileName[phase]+".pprof"))
		}
		return nil
	}

	if want("ceiling") {
		ce, err := rerun("ceiling: pipelined XADD", func() (*result, error) { return e.ceilingEnqueue(ctx, sz.Many, payload) })
		if err != nil {
			return err
		}
		ce.Label, ce.Key = fmt.Sprintf("Enqueue: pipelined XADD, %d entries", sz.Many), keyCeilEnqueue
		cd, err := rerun("ceiling: XREADGROUP, no-op, SET … PX + XACK", func() (*result, error) { return e.ceilingDrain(ctx, sz.Drain, payload) })
		if err != nil {
			return err
		}
		cd.Label, cd.Key = fmt.Sprintf("Drain: XREADGROUP COUNT %d, no-op, SET … PX + XACK, %d entries", ceilingRead, sz.Drain), keyCeilDrain
		rep.Ceiling = []*result{ce, cd}
	}

	if err := row("many", keyMany, "enqueue", "EnqueueMany", 400000, fmt.Sprintf("EnqueueMany, %d tasks in one call", sz.Many),
		func(prof bool) (*result, error) {
			calls := 1
			if prof {
				calls = 5 // enough samples
			}
			return e.enqueueMany(ctx, sz.Many, calls, prof)
		}); err != nil {
		return err
	}
	if err := row("seq", keySeq, "enqueue", "Enqueue, 1 goroutine", 20000, fmt.Sprintf("Enqueue, 1 goroutine, %d tasks", sz.Seq),
		func(prof bool) (*result, error) { return e.enqueueSeq(ctx, sz.Seq, prof) }); err != nil {
		return err
	}
	if err := row("conc", keyConc, "enqueue", fmt.Sprintf("Enqueue, %d goroutines", sz.Goroutines), 150000, fmt.Sprintf("Enqueue, %d goroutines, %d tasks", sz.Goroutines, sz.Conc),
		func(prof bool) (*result, error) { return e.enqueueConc(ctx, sz.Conc, sz.Goroutines, prof) }); err != nil {
		return err
	}

	// The drain's setting for the metrics phase: the sweep's best when the
	// drain phase ran, else the best of the last full runs.
	drainBest := drainCfg{4096, 1024}
	if len(sz.DrainCfgs) == 1 {
		drainBest = sz.DrainCfgs[0]
	}
	if want("drain") {
		// One run per setting, then the best setting again for the table.
		best := sz.DrainCfgs[0]
		bestRate := 0.0
		if len(sz.DrainCfgs) > 1 {
			for _, dc := range sz.DrainCfgs {
				step("drain sweep: " + dc.String())
				r, err := clean(func() (*result, error) { return e.drain(ctx, sz.Drain, dc, false) })
				if err != nil {
					return err
				}
				rep.Sweep = append(rep.Sweep, r)
				if r.Rate > bestRate {
					best, bestRate = dc, r.Rate
				}
			}
		}
		// The defaults and the best setting in turn, for the same-run ratio.
		one := func(dc drainCfg, what string) func(int) (*result, error) {
			return func(i int) (*result, error) {
				step(fmt.Sprintf("End-to-end drain, %s (run %d of %d)", what, i+1, sz.Reps))
				return clean(func() (*result, error) { return e.drain(ctx, sz.Drain, dc, false) })
			}
		}
		bestR, defR, err := alternate(sz.Reps, one(best, best.String()), one(defaultCfg, "default settings"))
		if err != nil {
			return err
		}
		bestR.Target, bestR.Label, bestR.Key, bestR.Side = 100000, fmt.Sprintf("End-to-end drain, %d tasks, 1 worker", sz.Drain), keyDrainBest, "drain"
		defR.Target, defR.Label, defR.Key, defR.Side = 100000, fmt.Sprintf("End-to-end drain, %d tasks, 1 worker, default settings", sz.Drain), keyDrainDefault, "drain"
		rep.Rows = append(rep.Rows, bestR, defR)
		if o.profDir != "" {
			for _, x := range []struct {
				dc   drainCfg
				name string
			}{{best, "drain"}, {defaultCfg, "drain-default"}} {
				step("profiled drain, " + x.dc.String() + " (not in the table)")
				pr, err := e.drainWith(ctx, 3*sz.Drain, x.dc, x.name, nil)
				if err != nil {
					return err
				}
				fmt.Fprintf(progress, "  %s -> %s\n", pr.brief(), filepath.Join(o.profDir, x.name+".pprof"))
			}
		}
		drainBest = best
	}

	if want("procs") {
		one := func(procs int) func(int) (*result, error) {
			return func(i int) (*result, error) {
				step(fmt.Sprintf("End-to-end drain, %d worker process(es), default settings (run %d of %d)", procs, i+1, sz.Reps))
				return clean(func() (*result, error) { return e.procDrain(ctx, sz.Drain, procs) })
			}
		}
		r1, r2, err := alternate(sz.Reps, one(1), one(2))
		if err != nil {
			return err
		}
		r1.Target, r1.Label, r1.Key, r1.Side = 100000, fmt.Sprintf("End-to-end drain, %d tasks, 1 worker process, default settings", sz.Drain), keyProcs1, "drain"
		r2.Target, r2.Label, r2.Key, r2.Side = 160000, fmt.Sprintf("End-to-end drain, %d tasks, 2 worker processes, default settings", sz.Drain), keyProcs2, "drain"
		fmt.Fprintf(progress, "  2 processes ÷ 1: %.2f; Redis busy %.0f%% / %.0f%% of a core\n", r2.Rate/r1.Rate, 100*redisCores(r2), 100*redisCores(r1))
		rep.Rows = append(rep.Rows, r1, r2)
	}

	if want("metrics") {
		step(fmt.Sprintf("drain with metrics off and on, %d pairs, %s", sz.MetricsPairs, drainBest))
		mi, err := e.metricsRun(ctx, sz.Drain, sz.MetricsPairs, drainBest, clean)
		if err != nil {
			return err
		}
		rep.Metrics = mi
	}

	if want("latency") {
		step(fmt.Sprintf("latency at %d tasks/s for %v", sz.LatRate, sz.LatDur))
		lr, err := clean(func() (*result, error) {
			return e.latencyRun(ctx, sz.LatRate, sz.LatDur, sz.LatWarm, drainCfg{100, 256})
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(progress, "  p50 %v p90 %v p99 %v max %v (%d samples, %.0f tasks/s)\n",
			lr.Lat.P50, lr.Lat.P90, lr.Lat.P99, lr.Lat.Max, lr.Lat.Samples, lr.Lat.Rate)
		lr.Label = fmt.Sprintf("Latency, %d tasks/s", sz.LatRate)
		rep.Latency = lr
	}

	// The task-semantics phases. A failure is reported in the table and the
	// run goes on.
	sem := func(phase, label string, f func(profiled bool) (*result, error), profile string) {
		step(label)
		r, err := clean(func() (*result, error) { return f(false) })
		if err != nil {
			fmt.Fprintf(progress, "  %s failed: %v\n", label, err)
			rep.SemErrs = append(rep.SemErrs, label+": "+err.Error())
			return
		}
		d := r.Sem.Dist
		fmt.Fprintf(progress, "  p50 %v p90 %v p99 %v max %v (%d samples)\n", d.P50, d.P90, d.P99, d.Max, d.N)
		for _, pr := range r.Sem.Problems {
			fmt.Fprintf(progress, "  problem: %s\n", pr)
		}
		r.Label = label
		switch phase {
		case "cont":
			rep.Cont = r
		case "cancel":
			rep.Cancel = append(rep.Cancel, r)
		case "chain":
			fmt.Fprintf(progress, "  total %v, %v per link, first task after %v\n", r.Sem.Total, r.Sem.Total/time.Duration(max(r.Sem.Links, 1)), r.Sem.First)
			rep.Chain = r
		}
		if o.profDir != "" && profile != "" {
			step("profiled " + label + " (not in the table)")
			pr, err := f(true)
			if err != nil {
				fmt.Fprintf(progress, "  profiled run failed: %v\n", err)
				return
			}
			fmt.Fprintf(progress, "  p50 %v p99 %v -> %s\n", pr.Sem.Dist.P50, pr.Sem.Dist.P99, filepath.Join(o.profDir, profile+".pprof"))
		}
	}
	if want("cont") {
		sem("cont", fmt.Sprintf("Parent end → continuation start, %d samples", sz.ContN),
			func(prof bool) (*result, error) { return e.contRun(ctx, sz.ContN, sz.ContWarm, sz.ContRate, prof) }, "continuation")
	}
	if want("cancel") {
		for _, sub := range []bool{false, true} {
			label := fmt.Sprintf("Cancel propagation, worker in this process, %d samples", sz.CancelN)
			if sub {
				label = fmt.Sprintf("Cancel propagation, worker in a subprocess, %d samples", sz.CancelN)
			}
			sem("cancel", label, func(bool) (*result, error) { return e.cancelRun(ctx, sz.CancelN, sz.CancelWarm, sub) }, "")
		}
	}
	if want("chain") {
		sem("chain", fmt.Sprintf("Chain of %s continuations", thousands(float64(sz.Chain))),
			func(prof bool) (*result, error) { return e.chainRun(ctx, sz.Chain, prof) }, "chain")
	}

	if want("groups") {
		step(fmt.Sprintf("fork/join of %d against %d plain tasks, %d runs each; InvokeAll utilisation", sz.Group, sz.Group, sz.Reps))
		gi, err := e.groupsRun(ctx, sz.Group, sz.Reps)
		if err != nil {
			fmt.Fprintf(progress, "  groups failed: %v\n", err)
			rep.SemErrs = append(rep.SemErrs, "groups: "+err.Error())
		}
		rep.Groups = gi
	}

	if want("ratelimit") {
		step(fmt.Sprintf("ratelimit: Allow from 1 and 16 goroutines against redis-benchmark EVALSHA; throttled tasks for %v", sz.RateDur))
		ri, err := e.ratesRun(ctx, sz.RateCalls, sz.RateDur)
		if err != nil {
			fmt.Fprintf(progress, "  ratelimit failed: %v\n", err)
			rep.SemErrs = append(rep.SemErrs, "ratelimit: "+err.Error())
		}
		rep.Rates = ri
	}

	if want("delayed") {
		step("delayed tasks with coordinators")
		di, err := e.delayedRun(ctx, 500)
		if err != nil {
			fmt.Fprintf(progress, "  delayed failed: %v\n", err)
			rep.SemErrs = append(rep.SemErrs, "delayed: "+err.Error())
		}
		if di != nil {
			within := 10 * time.Second
			if o.quick {
				within = 2 * time.Second
			}
			if di.Spread, err = e.spreadRun(ctx, 50, within); err != nil {
				fmt.Fprintf(progress, "  spread failed: %v\n", err)
				rep.SemErrs = append(rep.SemErrs, "spread: "+err.Error())
			}
		}
		if di != nil {
			slots := 50
			if o.quick {
				slots = 10
			}
			if di.Repeat, err = e.repeatRun(ctx, slots, 100*time.Millisecond); err != nil {
				fmt.Fprintf(progress, "  repeat failed: %v\n", err)
				rep.SemErrs = append(rep.SemErrs, "repeat: "+err.Error())
			}
		}
		rep.Delayed = di
	}

	if want("batch") {
		step(fmt.Sprintf("batch: %s items through Batch and as single tasks", thousands(float64(sz.BatchItems))))
		bi, err := e.batchRun(ctx, sz.BatchItems, 100)
		if err != nil {
			fmt.Fprintf(progress, "  batch failed: %v\n", err)
			rep.SemErrs = append(rep.SemErrs, "batch: "+err.Error())
		}
		rep.Batch = bi
	}
	if want("partition") {
		step(fmt.Sprintf("partition: %s keys × 10 against the same tasks without keys, %d alternating runs", thousands(float64(sz.PartKeys)), sz.Reps))
		if rep.Batch == nil {
			rep.Batch = &batchInfo{}
		}
		if err := e.partitionRun(ctx, rep.Batch, sz.PartKeys, 10, sz.Reps); err != nil {
			fmt.Fprintf(progress, "  partition failed: %v\n", err)
			rep.SemErrs = append(rep.SemErrs, "partition: "+err.Error())
		}
	}

	if want("soak") {
		step(fmt.Sprintf("soak: %s tasks through one queue at %s/s", thousands(float64(sz.Soak)), thousands(float64(sz.SoakRate))))
		si, err := e.soakRun(ctx, sz.Soak, sz.SoakRate, 5*time.Second)
		if err != nil {
			fmt.Fprintf(progress, "  soak failed: %v\n", err)
			rep.SemErrs = append(rep.SemErrs, "soak: "+err.Error())
		}
		rep.Soak = si
	}

	if want("apibatch") || want("apilatency") {
		step(fmt.Sprintf("HTTP API: batches of %d against EnqueueMany; single POSTs at %d/s against Enqueue", sz.APIBatch, sz.APIRate))
		ai, err := e.apiRun(ctx, sz, want("apibatch"), want("apilatency"), clean)
		if err != nil {
			fmt.Fprintf(progress, "  HTTP API failed: %v\n", err)
			rep.SemErrs = append(rep.SemErrs, "HTTP API: "+err.Error())
		}
		rep.API = ai
	}

	var shi *shardsInfo
	if want("shards") {
		sc := sz.Shards
		step(fmt.Sprintf("shards: a %d-master cluster; %s tasks through a %d-shard queue and a plain one, %d runs each; per-key order", sc.Masters, thousands(float64(sc.Tasks)), sc.Shards, sc.Reps))
		si, err := e.shardsRun(ctx, sc, func(c *cluster) { ownCluster.Store(c) })
		if err != nil {
			fmt.Fprintf(progress, "  shards failed: %v\n", err)
			if si == nil {
				si = &shardsInfo{Cfg: sc}
			}
			si.Errs = append(si.Errs, err.Error())
		}
		shi = si
	}
	if want("shards") || want("durable") {
		wc := sz.Wait
		step(fmt.Sprintf("durable enqueue (WAIT) on a %d-master cluster with replicas, %d rounds", wc.Masters, wc.Reps))
		wi, err := e.waitRun(ctx, wc, func(c *cluster) { ownCluster.Store(c) })
		if shi == nil {
			shi = &shardsInfo{Cfg: sz.Shards, WaitOnly: true}
		}
		if err != nil {
			fmt.Fprintf(progress, "  durable enqueue failed: %v\n", err)
			shi.Errs = append(shi.Errs, "durable enqueue: "+err.Error())
		}
		if wi != nil && wi.Note != "" {
			fmt.Fprintf(progress, "  %s\n", wi.Note)
		}
		shi.Wait = wi
	}

	var upl *uploadInfo
	if want("uploadsmall") || want("upload1g") {
		step("uploads to S3: small files and one big file, each against plain minio-go")
		ui, err := e.uploadRun(ctx, o.quick, want("uploadsmall"), want("upload1g"))
		if err != nil {
			fmt.Fprintf(progress, "  uploads failed: %v\n", err)
			rep.SemErrs = append(rep.SemErrs, "uploads: "+err.Error())
		}
		upl = ui
	}

	rep.Took = time.Since(rep.Started)

	md := rep.markdown()
	if shi != nil {
		md += "\n" + shi.markdown()
	}
	if upl != nil {
		md += "\n" + upl.markdown()
	}
	if _, err := io.WriteString(stdout, md); err != nil {
		return err
	}
	if o.jsonOut != "" {
		if err := rep.writeJSON(o.jsonOut); err != nil {
			return err
		}
	}
	if o.out != "" {
		if err := rewriteDoc(o.out, md); err != nil {
			return err
		}
		fmt.Fprintf(progress, "wrote %s\n", o.out)
	}
	return nil
}

// median returns the run with the median tasks/s.
func median(rs []*result) *result {
	s := append([]*result(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i].Rate < s[j].Rate })
	m := s[len(s)/2]
	for _, r := range rs {
		m.Runs = append(m.Runs, r.Rate)
	}
	return m
}

// machineInfo describes where the run happened.
type machineInfo struct {
	NumCPU       int
	GOMAXPROCS   int
	GoVersion    string
	OS           string
	CPUModel     string
	Kernel       string
	RedisVersion string
	RedisOwn     bool
	LoadAvg      string
	BenchVersion string
}

func machine(ctx context.Context, admin *redis.Client, own bool) machineInfo {
	m := machineInfo{
		NumCPU:       runtime.NumCPU(),
		GOMAXPROCS:   runtime.GOMAXPROCS(0),
		GoVersion:    runtime.Version(),
		OS:           runtime.GOOS + "/" + runtime.GOARCH,
		RedisVersion: redisInfoField(ctx, admin, "server", "redis_version"),
		RedisOwn:     own,
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func (m machineInfo) line() string {
	return fmt.Sprintf("machine: %d CPUs (GOMAXPROCS %d), %s, %s, Redis %s, load average %s", m.NumCPU, m.GOMAXPROCS, m.GoVersion, m.OS, m.RedisVersion, m.LoadAvg)
}

// parseSweep parses "256x256,1024x512".
func parseSweep(s string) ([]drainCfg, error) {
	var out []drainCfg
	for _, part := range strings.Split(s, ",") {
		var dc drainCfg
		if _, err := fmt.Sscanf(strings.TrimSpace(part), "%dx%d", &dc.Concurrency, &dc.FetchBatch); err != nil || dc.Concurrency < 1 || dc.FetchBatch < 1 {
			return nil, fmt.Errorf("--drain-sweep: %q is not CONCURRENCYxFETCHBATCH", part)
		}
		out = append(out, dc)
	}
	return out, nil
}
