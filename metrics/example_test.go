package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/asynctest"
	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/metrics"
	"github.com/taskfleet/async/worker"
)

// Export a worker's task metrics and its queues' depths on /metrics.
func Example() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", ContextTimeoutEnabled: true})
	defer rdb.Close()

	reg := prometheus.NewRegistry()
	m, err := metrics.New(metrics.Opts{
		Registerer: reg,
		Inspector:  inspect.New(rdb), // the queue gauges, read every 5 s
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	w, err := worker.New(ctx, rdb, &worker.Config{
		Queues:    map[string]int{"mail": 1},
		Observers: []worker.Observer{m}, // the task counters and histograms
	})
	if err != nil {
		log.Fatal(err)
	}
	worker.Handle(w, func(ctx context.Context, a Mail) (struct{}, error) {
		return struct{}{}, nil // send the mail
	})
	if err := w.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer w.Stop(context.Background())

	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	log.Fatal(http.ListenAndServe("127.0.0.1:9090", nil))
}

// Count what a worker did: three tasks, one of which fails for good.
func ExampleNew() {
	// A fleet of the test kit (asynctest) for the example: an embedded
	// Redis, a client and a worker whose Observers report to m.
	err := asynctest.Standalone("metrics", func(t testing.TB) {
		reg := prometheus.NewRegistry()
		m, err := metrics.New(metrics.Opts{Registerer: reg})
		if err != nil {
			t.Fatal(err)
		}
		f := asynctest.NewFleet(t, func(w *worker.Worker) {
			worker.Handle(w, func(ctx context.Context, a Mail) (struct{}, error) {
				if a.To == "" {
					return struct{}{}, worker.Permanent(errors.New("no recipient"))
				}
				return struct{}{}, nil
			})
		}, &asynctest.Options{Worker: worker.Config{
			Queues:    map[string]int{"mail": 1},
			Observers: []worker.Observer{m},
			Logger:    slog.New(slog.DiscardHandler),
		}})
		ctx, c := context.Background(), f.Client()
		for _, to := range []string{"a@example.com", "b@example.com", ""} {
			h, err := c.Enqueue(ctx, Mail{To: to}, &client.EnqueueOpts{Queue: "mail"})
			if err != nil {
				t.Fatal(err)
			}
			_, _ = h.Outcome(ctx) // wait for its end
		}

		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "async_tasks_total" {
				continue
			}
			for _, s := range mf.GetMetric() {
				if v := s.GetCounter().GetValue(); v > 0 {
					fmt.Printf("async_tasks_total%v %v\n", labels(s.GetLabel()), v)
				}
			}
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// async_tasks_total{kind="mail",outcome="dead",queue="mail"} 1
	// async_tasks_total{kind="mail",outcome="succeeded",queue="mail"} 2
}

func labels(ls []*dto.LabelPair) string {
	var b strings.Builder
	for i, l := range ls {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", l.GetName(), l.GetValue())
	}
	return "{" + b.String() + "}"
}
