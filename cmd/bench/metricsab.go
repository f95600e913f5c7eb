package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/metrics"
	"github.com/taskfleet/async/worker"
)

// metricsRefresh is the queue snapshot's period in the metrics-on drains,
// and metricsScrape how often they are scraped: both shorter than a real
// deployment's (5 s and 15 s or more), so a drain of a second or two sees
// several of each.
const (
	metricsRefresh = time.Second
	metricsScrape  = time.Second
)

// metricsInfo is the drain with metrics on against off, same run.
type metricsInfo struct {
	Pairs    int
	Settings drainCfg
	Off, On  []*result // in pair order
	First    []bool    // per pair: whether the off run went first
	Scrapes  int       // scrapes during the on runs, in all
	Readings int       // snapshot readings during the on runs, in all (the one at New included)
}

// metricsRun drains n tasks pairs times with a plain worker and pairs times
// with a worker whose events go to a metrics.Metrics (its snapshot
// refreshing every metricsRefresh, scraped every metricsScrape), alternating
// which goes first. clean is the caller's retry-when-busy wrapper.
func (e *env) metricsRun(ctx context.Context, n, pairs int, dc drainCfg, clean func(func() (*result, error)) (*result, error)) (*metricsInfo, error) {
	mi := &metricsInfo{Pairs: pairs, Settings: dc}
	off := func() (*result, error) { return e.drain(ctx, n, dc, false) }
	on := func() (*result, error) {
		r, scrapes, readings, err := e.drainMetrics(ctx, n, dc)
		if err == nil {
			mi.Scrapes += scrapes
			mi.Readings += readings
		}
		return r, err
	}
	for i := range pairs {
		offFirst := i%2 == 0
		order := []func() (*result, error){off, on}
		if !offFirst {
			order = []func() (*result, error){on, off}
		}
		var got [2]*result
		for j, f := range order {
			fmt.Fprintf(e.progress, "  pair %d of %d: metrics %s\n", i+1, pairs, map[bool]string{true: "off", false: "on"}[offFirst == (j == 0)])
			r, err := clean(f)
			if err != nil {
				return nil, err
			}
			got[j] = r
		}
		if !offFirst {
			got[0], got[1] = got[1], got[0]
		}
		mi.Off = append(mi.Off, got[0])
		mi.On = append(mi.On, got[1])
		mi.First = append(mi.First, offFirst)
	}
	return mi, nil
}

// drainMetrics is one drain with metrics on. It checks afterwards that the
// observer counted every task's start and success.
func (e *env) drainMetrics(ctx context.Context, n int, dc drainCfg) (r *result, scrapes, readings int, err error) {
	reg := prometheus.NewRegistry()
	srdb := redis.NewClient(&redis.Options{Addr: e.addr, ContextTimeoutEnabled: true})
	defer srdb.Close()
	hook := &readingHook{}
	srdb.AddHook(hook)
	m, err := metrics.New(metrics.Opts{Registerer: reg, Inspector: inspect.New(srdb), Refresh: metricsRefresh})
	if err != nil {
		return nil, 0, 0, err
	}
	defer m.Close()

	// The scraper: the whole HTTP handler (gather and encode), without the
	// network.
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(metricsScrape)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
				if rec.Code == http.StatusOK {
					scrapes++
				}
			}
		}
	})
	r, err = e.drainWith(ctx, n, dc, false, []worker.Observer{m})
	close(stop)
	wg.Wait()
	readings = int(hook.n.Load()) // the first, at New, included
	if err != nil {
		return nil, 0, 0, err
	}

	mfs, err := reg.Gather()
	if err != nil {
		return nil, 0, 0, err
	}
	var started, succeeded float64
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			switch mf.GetName() {
			case "async_tasks_started_total":
				started += s.GetCounter().GetValue()
			case "async_tasks_total":
				for _, l := range s.GetLabel() {
					if l.GetName() == "outcome" && l.GetValue() == "succeeded" {
						succeeded += s.GetCounter().GetValue()
					}
				}
			}
		}
	}
	if started != float64(n) || succeeded != float64(n) {
		return nil, 0, 0, fmt.Errorf("metrics on: the observer counted %.0f starts and %.0f successes of %d tasks", started, succeeded, n)
	}
	r.Settings = dc.String() + ", metrics on"
	return r, scrapes, readings, nil
}

// readingHook counts the snapshot's readings: one SMEMBERS of the queue
// registry each.
type readingHook struct{ n atomic.Int64 }

func (h *readingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *readingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "smembers" {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *readingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func medianRate(rs []*result) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = r.Rate
	}
	return medianOf(v)
}

func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// markdown renders the metrics section.
func (mi *metricsInfo) markdown(p func(string, ...any)) {
	p("### Drain with metrics on against off\n\n")
	if len(mi.Off) == 0 {
		p("No pair completed.\n\n")
		return
	}
	ratios := make([]float64, len(mi.Off))
	var goOff, goOn, rOff, rOn []float64
	for i := range mi.Off {
		ratios[i] = mi.On[i].Rate / mi.Off[i].Rate
		goOff, goOn = append(goOff, mi.Off[i].GoCPUus), append(goOn, mi.On[i].GoCPUus)
		rOff, rOn = append(rOff, mi.Off[i].RedisCPUus), append(rOn, mi.On[i].RedisCPUus)
	}
	pooled := medianRate(mi.On) / medianRate(mi.Off)
	paired := medianOf(ratios)
	below := 0
	for _, x := range ratios {
		if x < 1 {
			below++
		}
	}
	p("| Measurement | Goal | Metrics off | Metrics on | On ÷ off | Met |\n|---|--:|--:|--:|--:|:-:|\n")
	p("| Drain of %s tasks, median of %d runs each | ≥ 0.95 | %s/s | %s/s | %.3f | %s |\n",
		thousands(float64(mi.Off[0].Tasks)), len(mi.Off), thousands(medianRate(mi.Off)), thousands(medianRate(mi.On)), pooled, met(pooled >= 0.95))
	p("| … median of the %d pairs' ratios | ≥ 0.95 | | | %.3f (%d below 1) | %s |\n", len(ratios), paired, below, met(paired >= 0.95))
	p("| Go CPU µs/task (median) | | %.2f | %.2f | %.3f | |\n", medianOf(goOff), medianOf(goOn), medianOf(goOn)/medianOf(goOff))
	p("| Redis CPU µs/task (median) | | %.2f | %.2f | %.3f | |\n\n", medianOf(rOff), medianOf(rOn), medianOf(rOn)/medianOf(rOff))
	p("| Pair | First | Off | On | On ÷ off |\n|--:|---|--:|--:|--:|\n")
	for i := range mi.Off {
		first := "on"
		if mi.First[i] {
			first = "off"
		}
		p("| %d | %s | %s/s | %s/s | %.3f |\n", i+1, first, thousands(mi.Off[i].Rate), thousands(mi.On[i].Rate), ratios[i])
	}
	p("\nOne worker, %s, drains pre-enqueued no-op tasks as in the throughput table; with metrics on its Config.Observers holds a metrics.Metrics "+
		"(every start and success counted and timed), whose queue snapshot (Inspector.Queues) is read every %v, and the promhttp handler "+
		"is served every %v in the same process (gather and encode, no network): %d scrapes and %d snapshot readings over the on runs. "+
		"After each on run the counters are checked: started and succeeded equal the tasks drained. The pairs alternate which runs first.\n\n",
		mi.Settings, metricsRefresh, metricsScrape, mi.Scrapes, mi.Readings)
}
