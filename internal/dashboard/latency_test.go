package dashboard

import (
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// With a metrics source, the overview shows the percentiles of its
// histograms per queue (summed over kinds); without one, no such section.
func TestLatencyFromMetrics(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "async_task_duration_seconds", Buckets: []float64{0.01, 0.1, 1}}, []string{"queue", "kind"})
	reg.MustRegister(h)
	for range 90 {
		h.WithLabelValues("q1", "a").Observe(0.005)
	}
	for range 10 {
		h.WithLabelValues("q1", "b").Observe(0.5)
	}
	srv, hc := f.server(t, Options{Metrics: reg})
	code, body := get(t, hc, srv.URL+"/")
	if code != http.StatusOK || !strings.Contains(body, "Latency of this process") || !strings.Contains(body, "handler run time") {
		t.Fatalf("%d, no latency section:\n%.3000s", code, body)
	}
	// p50 in the first bucket (0 to 10 ms: 5.6 ms), p99 in the third
	// (100 ms to 1 s: 910 ms).
	if !strings.Contains(body, "5.6 ms") || !strings.Contains(body, "910.0 ms") {
		t.Errorf("percentiles not shown as expected:\n%s", body[strings.Index(body, "Latency"):])
	}
	srv2, hc2 := f.server(t, Options{})
	if _, body := get(t, hc2, srv2.URL+"/"); strings.Contains(body, "Latency of this process") {
		t.Error("a latency section without a metrics source")
	}
}
