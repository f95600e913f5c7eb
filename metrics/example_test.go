package metrics_test

import (
	"context"
	"log"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

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
