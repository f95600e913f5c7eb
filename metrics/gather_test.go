package metrics_test

import (
	"math"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// sample is one series as a scrape shows it: a counter's or gauge's value,
// or a histogram's count and sum.
type sample struct {
	Value float64
	Count uint64
	Sum   float64
}

// find gathers g and returns the series of the metric name whose labels
// include labels (name, value pairs); ok is false when there is none. It
// fails t when more than one series matches.
func find(t testing.TB, g prometheus.Gatherer, name string, labels ...string) (s sample, ok bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if labelOf(m, labels[i]) != labels[i+1] {
					continue next
				}
			}
			if ok {
				t.Fatalf("%s%v: more than one series", name, labels)
			}
			ok = true
			switch {
			case m.Counter != nil:
				s.Value = m.Counter.GetValue()
			case m.Gauge != nil:
				s.Value = m.Gauge.GetValue()
			case m.Histogram != nil:
				s.Count, s.Sum = m.Histogram.GetSampleCount(), m.Histogram.GetSampleSum()
			default:
				s.Value = math.NaN()
			}
		}
	}
	return s, ok
}

// value is find's value, failing t when the series is missing.
func value(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	s, ok := find(t, g, name, labels...)
	if !ok {
		t.Fatalf("no series %s%v", name, labels)
	}
	return s.Value
}

// histogram is find's count and sum, failing t when the series is missing.
func histogram(t testing.TB, g prometheus.Gatherer, name string, labels ...string) (uint64, float64) {
	t.Helper()
	s, ok := find(t, g, name, labels...)
	if !ok {
		t.Fatalf("no series %s%v", name, labels)
	}
	return s.Count, s.Sum
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
