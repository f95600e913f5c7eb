package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/ratelimit"
	"github.com/taskfleet/async/worker"
)

// rated is the throttled task of the accuracy measurement.
type rated struct{}

func (rated) Kind() string { return "bench_rated" }

// ratesInfo is the rate limiter section of the report.
type ratesInfo struct {
	Calls        int
	Allow        [2]float64 // Allow calls/s from 1 and from 16 goroutines
	Raw          [2]float64 // go-redis EvalSha of the same script and args, no limiter code
	CallsBy      [2]int     // calls per measurement
	BaseAll      [2][]float64
	AllowAll     [2][]float64
	Base         [2]baseline // redis-benchmark EVALSHA of the same script, 1 and 16 clients
	Rate, Burst  int
	Dur          time.Duration
	Workers      int
	Starts       int // task starts within Dur of the first
	Want         int // Dur × rate + burst
	Busiest      int // most starts in a 100 ms window
	BusiestBound int
	Err          string
}

// allowGoal is the share of the EVALSHA baseline Allow must reach.
const allowGoal = 0.8

func (e *env) ratesRun(ctx context.Context, calls int, accDur time.Duration) (*ratesInfo, error) {
	ri := &ratesInfo{Calls: calls}
	// The same script and arguments redis-benchmark sends: a limit so high
	// that every call is allowed (and writes the bucket).
	lim := ratelimit.Limit{Rate: 1_000_000, Per: time.Second, Burst: 1_000_000}
	key := "bench-" + randHex(4)
	bk := ratelimit.BucketKey(key)
	if err := script.RateLimit.Load(ctx, e.admin).Err(); err != nil {
		return nil, err
	}
	interval := strconv.FormatFloat(float64(lim.Per)/float64(lim.Rate)/float64(time.Microsecond), 'f', -1, 64)
	// Three rounds of baseline, go-redis and Allow in turn, each figure the
	// median of its three: this machine's speed drifts within seconds.
	const rounds = 3
	cmd := []string{"EVALSHA", script.RateLimit.Hash(), "2", bk, bk + ":wake", interval, strconv.Itoa(lim.Burst), "1", "allow", "0"}
	for i, g := range []int{1, 16} {
		n := calls
		if g == 1 {
			n = calls / 3 // a single caller is slow; keep the rounds short
		}
		ri.CallsBy[i] = n
		rdb := redis.NewClient(&redis.Options{Addr: e.addr, PoolSize: 32})
		l := ratelimit.New(rdb, lim)
		rawArgs := []any{interval, lim.Burst, 1, "allow", 0}
		var bases []baseline
		var raws, allows []float64
		for round := 0; round < rounds; round++ {
			e.settle(ctx)
			b := runBaselineCmd(ctx, e.admin, e.addr, n, g, 1, fmt.Sprintf("EVALSHA ratelimit.lua, %d client(s), unpipelined", g),
				cmd, "EVALSHA <ratelimit.lua> 2 <bucket> <bucket>:wake 1 1000000 1 allow 0", bk)
			bases = append(bases, b)
			for _, raw := range []bool{true, false} {
				var next atomic.Int64
				var wg sync.WaitGroup
				var ferr atomic.Value
				e.settle(ctx)
				start := time.Now()
				for w := 0; w < g; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= int64(n) {
							var err error
							if raw {
								err = rdb.EvalSha(ctx, script.RateLimit.Hash(), []string{bk, bk + ":wake"}, rawArgs...).Err()
							} else {
								_, err = l.Allow(ctx, key, 1)
							}
							if err != nil {
								ferr.Store(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				rps := float64(n) / time.Since(start).Seconds()
				if err, _ := ferr.Load().(error); err != nil {
					_ = rdb.Close()
					return nil, err
				}
				if raw {
					raws = append(raws, rps)
				} else {
					allows = append(allows, rps)
				}
			}
			fmt.Fprintf(e.progress, "  %d goroutine(s), round %d: redis-benchmark %.0f, go-redis EvalSha %.0f, Allow %.0f calls/s\n",
				g, round+1, b.RPS, raws[round], allows[round])
		}
		sort.Slice(bases, func(a, b int) bool { return bases[a].RPS < bases[b].RPS })
		ri.Base[i] = bases[rounds/2]
		ri.Raw[i] = medianF(raws)
		ri.Allow[i] = medianF(allows)
		ri.BaseAll[i], ri.AllowAll[i] = make([]float64, 0, rounds), allows
		for _, b := range bases {
			ri.BaseAll[i] = append(ri.BaseAll[i], b.RPS)
		}
		_ = rdb.Del(ctx, bk).Err()
		_ = rdb.Close()
	}
	if err := e.rateAccuracy(ctx, ri, 200, 20, accDur); err != nil {
		ri.Err = err.Error()
	}
	return ri, nil
}

// rateAccuracy runs 4 workers (in this process) on throttled tasks of one key
// at rate per second, and counts their starts.
func (e *env) rateAccuracy(ctx context.Context, ri *ratesInfo, rate, burst int, dur time.Duration) error {
	c, q, done, err := e.session(ctx, "rates")
	if err != nil {
		return err
	}
	defer done()
	var mu sync.Mutex
	var starts []time.Time
	const workers = 4
	for i := 0; i < workers; i++ {
		wrdb := redis.NewClient(&redis.Options{Addr: e.addr, PoolSize: 32})
		defer wrdb.Close()
		w, err := worker.New(context.Background(), wrdb, &worker.Config{
			Queues: map[string]int{q: 1}, Concurrency: 64, BlockTimeout: blockTimeout, Logger: e.logger,
			RateLimits: []worker.RateLimit{{KeyPrefix: "acc:", Limit: ratelimit.Limit{Rate: rate, Per: time.Second, Burst: burst}}},
		})
		if err != nil {
			return err
		}
		worker.Handle(w, func(ctx context.Context, a rated) (struct{}, error) {
			mu.Lock()
			starts = append(starts, time.Now())
			mu.Unlock()
			return struct{}{}, nil
		})
		if err := w.Start(ctx); err != nil {
			return err
		}
		defer e.stopWorker(w)
	}
	n := int(dur.Seconds()*float64(rate)) + burst + rate/2
	specs := make([]client.Spec, n)
	for i := range specs {
		specs[i] = client.Spec{Args: rated{}, Opts: &client.EnqueueOpts{Queue: q, RateKey: "acc:" + q}}
	}
	hs, err := c.EnqueueMany(ctx, specs)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, dur+time.Minute)
	defer cancel()
	if err := client.WaitAll(wctx, hs...); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(starts, func(a, b int) bool { return starts[a].Before(starts[b]) })
	t0 := starts[0]
	ri.Rate, ri.Burst, ri.Dur, ri.Workers = rate, burst, dur, workers
	ri.Starts = sort.Search(len(starts), func(i int) bool { return starts[i].Sub(t0) >= dur })
	ri.Want = int(dur.Seconds()*float64(rate)) + burst
	for i := range starts {
		j := sort.Search(len(starts), func(k int) bool { return starts[k].Sub(starts[i]) >= 100*time.Millisecond })
		ri.Busiest = max(ri.Busiest, j-i)
	}
	ri.BusiestBound = rate/10 + burst
	fmt.Fprintf(e.progress, "  %d/s for %v over %d workers: %d starts (want %d), busiest 100 ms window %d (bound %d)\n",
		rate, dur, workers, ri.Starts, ri.Want, ri.Busiest, ri.BusiestBound)
	return nil
}

func (ri *ratesInfo) markdown(p func(string, ...any)) {
	p("### Rate limiter\n\n")
	p("| Measurement | Goal | Measured | Baseline (same run) | Ratio | Met |\n|---|--:|--:|--:|--:|:-:|\n")
	for i, g := range []int{1, 16} {
		b := ri.Base[i]
		if b.Err != "" {
			p("| `Allow`, %d goroutine(s) | ≥ %.0f%% of the baseline | %s calls/s | failed: %s | — | — |\n", g, 100*allowGoal, thousands(ri.Allow[i]), b.Err)
			continue
		}
		ratio := ri.Allow[i] / b.RPS
		p("| `Allow`, %d goroutine(s), %s calls, median of 3 rounds | ≥ %.0f%% of the baseline | %s calls/s | %s calls/s (`redis-benchmark -c %d` EVALSHA of the same script) | %.2f | %s |\n",
			g, thousands(float64(ri.CallsBy[i])), 100*allowGoal, thousands(ri.Allow[i]), thousands(b.RPS), g, ratio, met(ratio >= allowGoal))
		p("| … go-redis `EvalSha` of the same script and arguments, %d goroutine(s) (no limiter code) | — | %s calls/s | | %.2f | — |\n",
			g, thousands(ri.Raw[i]), ri.Raw[i]/b.RPS)
	}
	if ri.Err != "" {
		p("| Accuracy | — | failed: %s | — | — | — |\n", ri.Err)
	} else if ri.Workers > 0 {
		d := float64(ri.Starts-ri.Want) / float64(ri.Want)
		p("| Throttled task starts in %v, %d/s burst %d, %d workers | %d ± 2%% | %d | — | %+.2f%% | %s |\n",
			ri.Dur, ri.Rate, ri.Burst, ri.Workers, ri.Want, ri.Starts, 100*d, met(d >= -0.02 && d <= 0.02))
		p("| Busiest 100 ms window of those starts | ≤ %d | %d | — | — | %s |\n", ri.BusiestBound, ri.Busiest, met(ri.Busiest <= ri.BusiestBound))
	}
	for i, g := range []int{1, 16} {
		p("\n%d goroutine(s), rounds: redis-benchmark %s; Allow %s.", g, fmtRates(ri.BaseAll[i]), fmtRates(ri.AllowAll[i]))
	}
	p("\n\nThe accuracy rows here run 4 workers in the bench's process; `TestRateLimitAccuracyAcrossProcesses` checks the same with 4 worker processes on every CI run (real Redis).\n\n")
}

func fmtRates(v []float64) string {
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = thousands(x)
	}
	return joinStr(out)
}
