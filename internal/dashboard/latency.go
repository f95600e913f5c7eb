package dashboard

import (
	"math"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// latencyRow is one queue's percentiles of one histogram of package
// metrics, summed over the kinds, since this process started.
type latencyRow struct {
	Queue string  `json:"queue"`
	What  string  `json:"what"` // "run" (handler run time) or "queued" (wait before the handler)
	Count uint64  `json:"count"`
	P50   float64 `json:"p50"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
}

// The histograms of package metrics the overview reads.
var latencyMetrics = []struct{ name, what string }{
	{"async_task_duration_seconds", "run"},
	{"async_task_queued_seconds", "queued"},
}

// latency gathers g and returns, per queue, the percentiles of the
// handlers' run time and of the wait before them, estimated from the
// histograms' buckets as Prometheus' histogram_quantile does (linear within
// a bucket).
func latency(g prometheus.Gatherer) ([]latencyRow, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, err
	}
	out := []latencyRow{}
	for _, lm := range latencyMetrics {
		for _, mf := range mfs {
			if mf.GetName() != lm.name || mf.GetType() != dto.MetricType_HISTOGRAM {
				continue
			}
			// Sum the kinds of each queue.
			type acc struct {
				count  uint64
				bounds []float64
				cum    []uint64
			}
			byQ := map[string]*acc{}
			for _, m := range mf.GetMetric() {
				q := ""
				for _, l := range m.GetLabel() {
					if l.GetName() == "queue" {
						q = l.GetValue()
					}
				}
				h := m.GetHistogram()
				a := byQ[q]
				if a == nil {
					a = &acc{}
					for _, b := range h.GetBucket() {
						a.bounds = append(a.bounds, b.GetUpperBound())
					}
					a.cum = make([]uint64, len(a.bounds))
					byQ[q] = a
				}
				a.count += h.GetSampleCount()
				for j, b := range h.GetBucket() {
					if j < len(a.cum) {
						a.cum[j] += b.GetCumulativeCount()
					}
				}
			}
			qs := make([]string, 0, len(byQ))
			for q := range byQ {
				qs = append(qs, q)
			}
			slices.Sort(qs)
			for _, q := range qs {
				a := byQ[q]
				if a.count == 0 {
					continue
				}
				out = append(out, latencyRow{Queue: q, What: lm.what, Count: a.count,
					P50: quantile(0.5, a.bounds, a.cum, a.count), P95: quantile(0.95, a.bounds, a.cum, a.count),
					P99: quantile(0.99, a.bounds, a.cum, a.count)})
			}
		}
	}
	slices.SortStableFunc(out, func(a, b latencyRow) int {
		if a.Queue < b.Queue {
			return -1
		}
		if a.Queue > b.Queue {
			return 1
		}
		return 0
	})
	return out, nil
}

// quantile estimates the q-quantile of count observations in buckets of
// upper bounds with cumulative counts cum; past the last bound it answers
// the last bound (what is known: "more than").
func quantile(q float64, bounds []float64, cum []uint64, count uint64) float64 {
	rank := q * float64(count)
	lower, below := 0.0, uint64(0)
	for j, ub := range bounds {
		if float64(cum[j]) >= rank {
			in := cum[j] - below
			if in == 0 || math.IsInf(ub, 1) {
				return lower
			}
			return lower + (ub-lower)*(rank-float64(below))/float64(in)
		}
		lower, below = ub, cum[j]
	}
	return lower
}
