package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/dashboard"
)

// The web dashboard: `worker dashboard`, and -ui in the run mode.

var cmdDashboard = &command{
	name: "dashboard", plain: true,
	summary: "serve the web dashboard: queues, tasks, groups, repeats, workers, limits; actions",
	about: `Serves the dashboard's pages on -http until interrupted. Access: set
DASHBOARD_TOKEN (a bearer token: Authorization: Bearer TOKEN, or open
/?token=TOKEN once, which sets a cookie) and/or DASHBOARD_USER and
DASHBOARD_PASSWORD (basic auth). With neither, it serves only a loopback
address. -read-only hides and refuses every action.`,
	setup: func(e *cliEnv) func(context.Context, []string) error {
		addr := e.fs.String("http", envOr(e.getenv, "DASHBOARD_ADDR", "127.0.0.1:8080"), "serve on `ADDR` (env DASHBOARD_ADDR)")
		readOnly := e.fs.Bool("read-only", e.getenv("DASHBOARD_READ_ONLY") != "", "render no action and refuse every POST (env DASHBOARD_READ_ONLY)")
		base := e.fs.String("base-path", envOr(e.getenv, "DASHBOARD_BASE_PATH", "/"), "serve under `PATH`, e.g. /ui behind a proxy (env DASHBOARD_BASE_PATH)")
		return func(ctx context.Context, _ []string) error {
			in, err := e.inspector()
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			opts := dashboardOptions(e.getenv, e.conn, *addr, log, nil)
			opts.ReadOnly, opts.BasePath = *readOnly, *base
			h, err := dashboard.New(in, opts)
			if err != nil {
				return usage("%v", err)
			}
			ln, err := net.Listen("tcp", *addr)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", *addr, err)
			}
			mux := http.NewServeMux()
			path := mountPath(opts.BasePath)
			mux.Handle(path, h)
			if path != "/" {
				mux.Handle(path[:len(path)-1], h)
			}
			srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: idleTimeout}
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ln) }()
			fmt.Fprintf(e.stdout, "dashboard on http://%s%s (redis %s)\n", ln.Addr(), path, e.conn.String())
			select {
			case <-ctx.Done():
			case err := <-done:
				return err
			}
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				return err
			}
			if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}
	},
}

// dashboardOptions are the dashboard's options from the environment
// (DASHBOARD_TOKEN, DASHBOARD_USER, DASHBOARD_PASSWORD), for a server on
// addr reading the Redis of conn.
func dashboardOptions(getenv func(string) string, conn *redisConn, addr string, log *slog.Logger, metrics prometheus.Gatherer) dashboard.Options {
	return dashboard.Options{Addr: addr, Token: getenv("DASHBOARD_TOKEN"), User: getenv("DASHBOARD_USER"),
		Password: getenv("DASHBOARD_PASSWORD"), Target: conn.String(), Scrub: conn.scrub, Logger: log, Metrics: metrics}
}

// mountPath is the mux pattern of a base path: "/" or "/ui/".
func mountPath(base string) string {
	if base == "" || base == "/" {
		return "/"
	}
	if base[len(base)-1] == '/' {
		return base
	}
	return base + "/"
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// uiHandler is the dashboard at /ui on the run mode's HTTP_ADDR, with the
// latency percentiles of this process' metrics.
func uiHandler(cfg *config, in *inspect.Inspector, log *slog.Logger, reg prometheus.Gatherer) (http.Handler, error) {
	opts := dashboardOptions(cfg.getenv, cfg.redis, cfg.httpAddr, log, reg)
	opts.BasePath = "/ui"
	opts.ReadOnly = cfg.uiReadOnly
	return dashboard.New(in, opts)
}
