package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"strings"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

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
	ctx := context.Background()

	// An embedded Redis for the example; use your server's address instead.
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: true})
	defer rdb.Close()

	reg := prometheus.NewRegistry()
	m, err := metrics.New(metrics.Opts{Registerer: reg})
	if err != nil {
		log.Fatal(err)
	}
	w, err := worker.New(ctx, rdb, &worker.Config{
		Queues:    map[string]int{"mail": 1},
		Observers: []worker.Observer{m},
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	worker.Handle(w, func(ctx context.Context, a Mail) (struct{}, error) {
		if a.To == "" {
			return struct{}{}, worker.Permanent(errors.New("no recipient"))
		}
		return struct{}{}, nil
	})
	if err := w.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer w.Stop(context.Background())

	c, err := client.New(ctx, rdb, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for _, to := range []string{"a@example.com", "b@example.com", ""} {
		h, err := c.Enqueue(ctx, Mail{To: to}, &client.EnqueueOpts{Queue: "mail"})
		if err != nil {
			log.Fatal(err)
		}
		_, _ = h.Outcome(ctx) // wait for its end
	}

	mfs, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
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
