// Command worker is the deployable process of an async fleet: a worker, a
// coordinator, the HTTP API, or any set of them (-role), with the upload
// handler registered; and the operator's command line.
//
//	worker [flags]          run (flags below)
//	worker api [flags]      the HTTP API alone: the run mode with the role
//	                        api only (its flags but -role)
//	worker demo [flags]     the demo: uploads with ForkJoin, InvokeAll,
//	                        Throttle and Spread on an embedded Redis, then
//	                        to an embedded S3-compatible server
//	worker COMMAND ...      operator commands: queues, tasks, task, queue,
//	                        dead, workers, groups, group, repeats, enqueue,
//	                        dashboard, healthcheck, version (worker -h lists them;
//	                        worker COMMAND -h gives a command's flags)
//
// Every flag has an environment variable (given in -h); a flag wins over
// its variable. Redis is one server (REDIS_URL), a Redis Cluster
// (REDIS_CLUSTER_ADDRS) or a master behind Sentinel (REDIS_SENTINEL_ADDRS,
// REDIS_SENTINEL_MASTER); passwords never appear in -h, errors or logs.
// With -ui and -http, the web dashboard (internal/dashboard) is served at
// /ui next to /metrics; `worker dashboard` serves it alone.
//
// The role api serves the HTTP API (internal/httpapi: enqueue, read, wait
// for and cancel tasks and groups from any language) at /v1/ on -http.
// Its bearer tokens come from the environment only, API_TOKENS
// ("NAME:SECRET" or "NAME:SECRET:QUEUE,QUEUE" entries separated by ";" or
// newlines; a SECRET is at least 16 bytes, without ':') and the file API_TOKENS_FILE names (the same form: a mounted
// secret); with none, it serves only a loopback address, and refuses to
// start on any other. -tls-cert and -tls-key (TLS_CERT_FILE, TLS_KEY_FILE)
// serve -http over TLS, for every path on it. Secrets never appear in -h,
// errors or logs.
// The upload handler sends s3:// destinations to the store of -s3-endpoint
// (AWS_ENDPOINT_URL_S3), with the credentials of the environment
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) or of the
// profile AWS_PROFILE, never of a flag; -upload-* set its parts and the
// per-destination limits, and with the role worker every process sweeps
// the multipart uploads of its queues' ended tasks (-upload-sweep).
// SIGTERM or SIGINT drains: the worker stops fetching, lets running
// handlers finish for -drain-timeout, hands back what is left, and the
// process exits 0.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/inspect"
	"github.com/taskfleet/async/internal/dashboard"
	"github.com/taskfleet/async/internal/httpapi"
	"github.com/taskfleet/async/metrics"
	"github.com/taskfleet/async/worker"
)

// idleTimeout closes a keep-alive connection idle this long between
// requests, on the servers of -http and of `worker dashboard`. (A request's
// body is bounded by the API's own read deadline, httpapi.Config.BodyTimeout;
// there is no write timeout, since an outcome may wait minutes.)
const idleTimeout = 2 * time.Minute

// apiFirst serves the paths under /v1/ with api, as they are, and the rest
// with mux.
func apiFirst(api, mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") {
			api.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// warnClearText warns that the API's bearer tokens travel in clear text
// when it serves addr, an address that is not loopback, without TLS.
func warnClearText(log *slog.Logger, addr string, tls bool) {
	if tls || httpapi.CheckAddr(addr, false) == nil {
		return
	}
	log.Warn("api: tokens configured but no TLS (TLS_CERT_FILE, TLS_KEY_FILE) on an address that is not loopback: bearer tokens travel in clear text unless a TLS proxy is in front",
		slog.String("addr", addr))
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, nil))
}

// config is the process' configuration.
type config struct {
	redis        *redisConn
	queues       map[string]int
	concurrency  int
	role         string // -role as given; roles is what it means
	roles        roles
	httpAddr     string
	drainTimeout time.Duration
	logFormat    string
	logLevel     slog.Level
	uploadRoots  []string
	upload       uploadSettings
	lease        time.Duration
	name         string
	ui           bool // the dashboard at /ui on httpAddr
	uiReadOnly   bool
	tokens       []httpapi.Token // the API's, with the role api
	tls          *tls.Config     // -http over TLS when not nil
	getenv       func(string) string
}

// parseConfig reads flags, falling back to environment variables (getenv)
// and defaults.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	return parseRunConfig(false, args, getenv, stderr)
}

// parseRunConfig is parseConfig of `worker` or, with apiOnly, of `worker
// api`: the same flags but -role, which is api.
func parseRunConfig(apiOnly bool, args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	cmd := "worker"
	if apiOnly {
		cmd = "worker api"
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	conn := redisFlags(fs, getenv)
	queues := fs.String("queues", env("QUEUES", "default=1"), "queues to serve with their weights, `name=weight,...` (env QUEUES)")
	conc := fs.String("concurrency", env("CONCURRENCY", "100"), "`N` handlers run at once (env CONCURRENCY)")
	role := new(string)
	if apiOnly {
		*role = "api"
	} else {
		role = fs.String("role", env("ROLE", "both"), "`ROLES`: a comma-separated set of worker, coordinator and api; both is worker,coordinator (env ROLE)")
	}
	httpAddr := fs.String("http", env("HTTP_ADDR", ""), "serve /healthz, /readyz and /metrics on `ADDR`, and the API at /v1/ with the role api (env HTTP_ADDR; none when empty)")
	tlsCert := fs.String("tls-cert", env("TLS_CERT_FILE", ""), "serve -http over TLS with the certificate (chain) in the PEM `FILE`; with -tls-key (env TLS_CERT_FILE)")
	tlsKey := fs.String("tls-key", env("TLS_KEY_FILE", ""), "the private key of -tls-cert, a PEM `FILE` (env TLS_KEY_FILE)")
	tokensFile := fs.String("api-tokens-file", env("API_TOKENS_FILE", ""), "the API's bearer tokens in `FILE`, in the form of API_TOKENS (env API_TOKENS_FILE)")
	drain := fs.String("drain-timeout", env("DRAIN_TIMEOUT", "30s"), "`DURATION` running handlers may take to finish after SIGTERM (env DRAIN_TIMEOUT)")
	logFormat := fs.String("log-format", env("LOG_FORMAT", "json"), "`FORMAT`: json or text (env LOG_FORMAT)")
	logLevel := fs.String("log-level", env("LOG_LEVEL", "info"), "`LEVEL`: debug, info, warn or error (env LOG_LEVEL)")
	roots := fs.String("upload-roots", env("UPLOAD_ROOTS", ""), "`DIRS` uploads may read and write, comma-separated (env UPLOAD_ROOTS)")
	ui := fs.Bool("ui", getenv("UI") != "", "serve the web dashboard at /ui on -http (env UI=1; DASHBOARD_TOKEN, DASHBOARD_USER and DASHBOARD_PASSWORD protect it: worker dashboard -h)")
	uiReadOnly := fs.Bool("ui-read-only", getenv("UI_READ_ONLY") != "", "the dashboard of -ui renders no action and refuses every POST (env UI_READ_ONLY=1)")
	uploads := addUploadFlags(fs, env)
	lease := fs.String("lease", env("LEASE", "30s"), "`DURATION` a task stays with this worker without a heartbeat before another may take it over; every worker of a queue should use the same (env LEASE)")
	name := fs.String("name", env("WORKER_NAME", ""), "consumer name, unique per running worker; a stable one (the pod name) reuses its consumer (env WORKER_NAME; default host-pid)")
	fs.Usage = func() {
		if apiOnly {
			fmt.Fprint(fs.Output(), "usage: worker api [flags]      serve the HTTP API at /v1/ on -http (the role api alone)\n\nflags:\n")
			fs.PrintDefaults()
			fmt.Fprint(fs.Output(), "\n"+apiUsage)
			return
		}
		fmt.Fprint(fs.Output(), "usage: worker [flags]          run a worker, coordinator and/or the HTTP API (-role)\n"+
			"       worker api [flags]      the HTTP API alone (worker api -h)\n"+
			"       worker demo [flags]     the demo on an embedded Redis (worker demo -h)\n"+
			"       worker COMMAND ...      operator commands, below\n\nflags:\n")
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), "\n"+apiUsage+"\n"+cliUsage())
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q (worker -h lists the commands)", fs.Args())
	}
	c := &config{redis: conn, role: *role, httpAddr: *httpAddr, logFormat: *logFormat, name: *name, ui: *ui, uiReadOnly: *uiReadOnly,
		getenv: getenv}
	if c.ui && c.httpAddr == "" {
		return nil, errors.New("-ui serves the dashboard on -http (HTTP_ADDR): set it too")
	}
	if c.ui {
		auth := getenv("DASHBOARD_TOKEN") != "" || getenv("DASHBOARD_USER") != ""
		if err := dashboard.CheckAddr(c.httpAddr, auth); err != nil {
			return nil, fmt.Errorf("-ui on -http %s: %w", c.httpAddr, err)
		}
	}
	var err error
	if c.queues, err = parseQueues(*queues); err != nil {
		return nil, err
	}
	if c.concurrency, err = strconv.Atoi(*conc); err != nil || c.concurrency < 1 {
		return nil, fmt.Errorf("-concurrency %q: want a positive number", *conc)
	}
	if c.drainTimeout, err = time.ParseDuration(*drain); err != nil || c.drainTimeout < 0 {
		return nil, fmt.Errorf("-drain-timeout %q: want a duration such as 30s", *drain)
	}
	if c.lease, err = time.ParseDuration(*lease); err != nil || c.lease < 50*time.Millisecond {
		return nil, fmt.Errorf("-lease %q: want a duration of 50ms or more, such as 30s", *lease)
	}
	if c.upload, err = uploads.settings(); err != nil {
		return nil, err
	}
	if c.roles, err = parseRoles(c.role); err != nil {
		return nil, err
	}
	if c.tls, err = loadTLS(*tlsCert, *tlsKey, c.httpAddr); err != nil {
		return nil, err
	}
	if c.roles.api {
		if c.httpAddr == "" {
			return nil, errors.New("the role api serves the API on -http (HTTP_ADDR): set it too")
		}
		if c.tokens, err = apiTokens(getenv, *tokensFile); err != nil {
			return nil, err
		}
		if err := httpapi.CheckAddr(c.httpAddr, len(c.tokens) > 0); err != nil {
			return nil, fmt.Errorf("the API on -http %s: %w", c.httpAddr, err)
		}
	}
	switch c.logFormat {
	case "json", "text":
	default:
		return nil, fmt.Errorf("-log-format %q: want json or text", c.logFormat)
	}
	if err := c.logLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", *logLevel)
	}
	if _, err := c.redis.options(); err != nil {
		return nil, err
	}
	for _, r := range strings.Split(*roots, ",") {
		if r = strings.TrimSpace(r); r != "" {
			c.uploadRoots = append(c.uploadRoots, r)
		}
	}
	return c, nil
}

func parseQueues(s string) (map[string]int, error) {
	out := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, w, found := strings.Cut(part, "=")
		weight := 1
		if found {
			n, err := strconv.Atoi(w)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("-queues %q: weight %q of %s must be a positive number", s, w, name)
			}
			weight = n
		}
		out[name] = weight
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-queues %q: no queue", s)
	}
	return out, nil
}

// run runs the process until a signal (or stop, in tests) and returns its
// exit code.
func run(args []string, stdout, stderr io.Writer, stop <-chan struct{}) int {
	return runEnv(args, os.Getenv, stdout, stderr, stop)
}

// runEnv is run with the environment read through getenv.
func runEnv(args []string, getenv func(string) string, stdout, stderr io.Writer, stop <-chan struct{}) int {
	if len(args) > 0 && args[0] == "help" {
		args = []string{"-h"}
	}
	if len(args) > 0 && isCommand(args[0]) {
		// go-redis' own log lines (dial retries, Sentinel's choice of
		// master) are noise around a command's output and its error.
		redis.SetLogger(quietRedis{})
		ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer cancel()
		return runCLIContext(ctx, args, os.Stdin, stdout, stderr, getenv)
	}
	if len(args) > 0 && args[0] == "demo" {
		dc, err := parseDemo(args[1:], stderr)
		if err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			fmt.Fprintln(stderr, "worker:", err)
			return 2
		}
		ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer cancel()
		if stop != nil {
			go func() {
				select {
				case <-stop:
					cancel()
				case <-ctx.Done():
				}
			}()
		}
		if err := runDemo(ctx, dc, stdout); err != nil {
			fmt.Fprintln(stderr, "worker demo:", err)
			return 1
		}
		return 0
	}
	apiOnly := len(args) > 0 && args[0] == "api"
	if apiOnly {
		args = args[1:]
	}
	cfg, err := parseRunConfig(apiOnly, args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "worker:", err)
		return 2
	}
	opts := &slog.HandlerOptions{Level: cfg.logLevel}
	var h slog.Handler = slog.NewJSONHandler(stdout, opts)
	if cfg.logFormat == "text" {
		h = slog.NewTextHandler(stdout, opts)
	}
	log := slog.New(h)
	// Spans go to stderr (OTEL_TRACES_EXPORTER=console): stdout carries
	// the log lines.
	shutdownTracing, err := setupTracing(getenv, stderr)
	if err != nil {
		log.Error("exiting", slog.String("err", err.Error()))
		return 1
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdownTracing(ctx); err != nil {
			log.Warn("flush the last spans", slog.Any("err", err))
		}
	}()
	if err := serve(cfg, log, stop); err != nil {
		log.Error("exiting", slog.String("err", cfg.redis.scrub(err).Error()))
		return 1
	}
	return 0
}

func serve(cfg *config, log *slog.Logger, stop <-chan struct{}) error {
	rdb, err := cfg.redis.client()
	if err != nil {
		return err
	}
	defer rdb.Close()
	log.Info("redis", slog.String("target", cfg.redis.String()))
	startCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// drain is done once the process drains: the API's reads end then.
	drain, drained := context.WithCancel(context.Background())
	defer drained()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)

	var ready atomic.Bool
	var observers []worker.Observer
	if cfg.httpAddr != "" {
		// /metrics: this process' task events (as a worker) and the
		// queues' depths, read by the metrics' own background snapshot.
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		m, err := metrics.New(metrics.Opts{Registerer: reg, Inspector: inspect.New(rdb)})
		if err != nil {
			return err
		}
		defer m.Close()
		observers = append(observers, m)
		ln, err := net.Listen("tcp", cfg.httpAddr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.httpAddr, err)
		}
		mux := healthMux(rdb, &ready)
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		var handler http.Handler = mux
		if cfg.ui {
			h, err := uiHandler(cfg, inspect.New(rdb), log, reg)
			if err != nil {
				_ = ln.Close()
				return err
			}
			mux.Handle("/ui/", h)
			mux.Handle("/ui", h)
			log.Info("dashboard", slog.String("path", "/ui/"))
		}
		if cfg.roles.api {
			h, closeAPI, err := apiHandler(startCtx, cfg, rdb, log, drain)
			if err != nil {
				_ = ln.Close()
				return err
			}
			// Closed once the server below has shut down (defers run
			// last first).
			defer closeAPI()
			mux.Handle("/v1/", h)
			// Every /v1/ path goes to the API as sent: ServeMux would
			// answer an unclean one (/v1/tasks/uploads/..) with an HTML
			// redirect; the API refuses it in JSON.
			handler = apiFirst(h, mux)
			if len(cfg.tokens) == 0 {
				log.Warn("api: no token configured (API_TOKENS, API_TOKENS_FILE): it serves every request without authentication, on this loopback address only",
					slog.String("path", "/v1/"), slog.String("addr", ln.Addr().String()))
			} else {
				log.Info("api", slog.String("path", "/v1/"), slog.Any("tokens", tokenNames(cfg.tokens)))
				warnClearText(log, ln.Addr().String(), cfg.tls != nil)
			}
		}
		// The server's own errors (a failed TLS handshake, a panic) go to
		// the process' log, as structured lines.
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: idleTimeout, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		if cfg.tls != nil {
			srv.TLSConfig = cfg.tls
			go func() { _ = srv.ServeTLS(ln, "", "") }()
		} else {
			go func() { _ = srv.Serve(ln) }()
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				// Requests still running: cut their connections.
				_ = srv.Close()
			}
		}()
		log.Info("health and metrics endpoints", slog.String("addr", ln.Addr().String()), slog.Bool("tls", cfg.tls != nil))
	}

	var co *coordinator.Coordinator
	if cfg.roles.coordinator {
		c, err := coordinator.New(startCtx, rdb, &coordinator.Config{Logger: log})
		if err != nil {
			return err
		}
		if err := c.Start(startCtx); err != nil {
			return err
		}
		co = c
		log.Info("coordinator started")
	}
	var w *worker.Worker
	var sweeper *uploadSweeper
	if cfg.roles.worker {
		ww, err := worker.New(startCtx, rdb, &worker.Config{Queues: cfg.queues, Concurrency: cfg.concurrency, Name: cfg.name, Logger: log,
			Observers: observers, Lease: cfg.lease})
		if err != nil {
			return err
		}
		up, err := newUploadHandler(cfg, rdb, log)
		if err != nil {
			return err
		}
		defer up.Close()
		worker.Handle(ww, up.Run)
		for _, r := range cfg.uploadRoots {
			if st, err := os.Stat(r); err != nil || !st.IsDir() {
				log.Warn("upload root is not a directory here; uploads from or to it fail", slog.String("root", r))
			}
		}
		if err := ww.Start(startCtx); err != nil {
			return err
		}
		w = ww
		log.Info("worker started", slog.Any("queues", cfg.queues), slog.Int("concurrency", cfg.concurrency))
		sweeper = startUploadSweeper(cfg, up, log)
		// Stopped before the handler's clients close (defers run last
		// first).
		defer sweeper.stop()
	}
	ready.Store(true)

	select {
	case s := <-sigs:
		log.Info("draining", slog.String("signal", s.String()), slog.String("timeout", cfg.drainTimeout.String()))
	case <-stop:
		log.Info("draining", slog.String("timeout", cfg.drainTimeout.String()))
	}
	ready.Store(false)
	drained()
	var errs []error
	if w != nil {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.drainTimeout)
		err := w.Stop(ctx)
		cancel()
		if err != nil {
			// Handlers still running past the timeout: their tasks are
			// handed back (or taken over after their lease).
			log.Warn("drain timed out; the tasks still running go back to their queues", slog.Any("err", err))
		}
	}
	if co != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := co.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	log.Info("stopped")
	return errors.Join(errs...)
}

// healthMux serves /healthz (the process runs) and /readyz (started, not
// draining, and Redis answers a PING within a second).
func healthMux(rdb redis.UniversalClient, ready *atomic.Bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready: starting or draining", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		if err := rdb.Ping(ctx).Err(); err != nil {
			http.Error(w, "not ready: redis: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	return mux
}

// quietRedis drops go-redis' internal log lines.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}
