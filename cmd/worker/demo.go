package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/coordinator"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/upload"
	"github.com/taskfleet/async/worker"
)

// demoConfig is what `worker demo` runs.
type demoConfig struct {
	n        int
	redisURL string // "" starts an embedded miniredis
	workers  int
	limit    int           // InvokeAll's concurrency
	rate     int           // Throttle's starts per second
	spread   time.Duration // Spread's window
	dir      string        // "" makes a temporary one
	bars     bool
	s3Small  int // small files uploaded to the embedded S3 server
	s3Large  int // large ones (multipart)
}

func parseDemo(args []string, stderr io.Writer) (*demoConfig, error) {
	fs := flag.NewFlagSet("worker demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &demoConfig{}
	fs.IntVar(&c.n, "n", 200, "files per pattern")
	fs.StringVar(&c.redisURL, "redis", "", "Redis `URL` to run on (default: an embedded miniredis; use a throwaway database)")
	fs.IntVar(&c.workers, "workers", 3, "workers in this process")
	fs.IntVar(&c.limit, "invokeall", 8, "InvokeAll's concurrency")
	fs.IntVar(&c.rate, "rate", 100, "Throttle's starts per second")
	fs.DurationVar(&c.spread, "spread", 5*time.Second, "Spread's window")
	fs.StringVar(&c.dir, "dir", "", "directory for the files (default: a temporary one, removed afterwards)")
	noBars := fs.Bool("no-bars", false, "no live progress bars, only the table")
	fs.IntVar(&c.s3Small, "s3-files", 40, "small files (1-64 KiB) to upload to the embedded S3 server after the patterns")
	fs.IntVar(&c.s3Large, "s3-large", 3, "large files (6 MiB and up: multipart uploads) to upload to the embedded S3 server")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	c.bars = !*noBars
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("demo: unexpected arguments %q", fs.Args())
	case c.n < 1 || c.workers < 1 || c.limit < 1 || c.rate < 1 || c.spread <= 0:
		return nil, errors.New("demo: -n, -workers, -invokeall, -rate and -spread must be positive")
	case c.s3Small < 0 || c.s3Large < 0:
		return nil, errors.New("demo: -s3-files and -s3-large must not be negative")
	}
	return c, nil
}

// demoRun is one pattern's run, as the table shows it.
type demoRun struct {
	name    string
	queue   string
	g       *patterns.Group
	start   time.Time
	took    time.Duration
	maxConc int
	running int
	err     error
}

// runDemo uploads c.n generated files with ForkJoin, InvokeAll, Throttle
// and Spread side by side, each in its own queue, all served by c.workers
// workers of this process, with live progress bars, then prints a table.
// Then it uploads c.s3Small small files and c.s3Large large ones to an
// S3-compatible server embedded in the process, as one group whose
// progress in bytes it prints, and verifies every object's checksum.
func runDemo(ctx context.Context, c *demoConfig, out io.Writer) error {
	var rdb *redis.Client
	if c.redisURL == "" {
		m, err := miniredis.Run()
		if err != nil {
			return err
		}
		defer m.Close()
		rdb = redis.NewClient(&redis.Options{Addr: m.Addr(), ContextTimeoutEnabled: true})
		fmt.Fprintf(out, "embedded Redis (miniredis) on %s\n", m.Addr())
	} else {
		opts, err := redis.ParseURL(c.redisURL)
		if err != nil {
			conn := &redisConn{url: secretURL(c.redisURL)}
			return fmt.Errorf("demo: -redis %s: %w", conn.url.String(), conn.scrub(err))
		}
		opts.ContextTimeoutEnabled = true // deadlines bound socket reads
		rdb = redis.NewClient(opts)
	}
	defer rdb.Close()
	dir := c.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "async-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	co, err := coordinator.New(context.Background(), rdb, &coordinator.Config{Logger: log})
	if err != nil {
		return err
	}
	if err := co.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = co.Stop(context.Background()) }()

	stamp := time.Now().Format("150405.000")
	runs := []*demoRun{{name: "ForkJoin"}, {name: "InvokeAll"}, {name: "Throttle"}, {name: "Spread"}}
	byQueue := map[string]*demoRun{}
	queues := map[string]int{}
	for _, r := range runs {
		r.queue = "demo-" + strings.ToLower(r.name) + "-" + strings.ReplaceAll(stamp, ".", "")
		byQueue[r.queue] = r
		queues[r.queue] = 1
	}
	s3q := "demo-s3-" + strings.ReplaceAll(stamp, ".", "")
	s3, err := startDemoS3(s3q)
	if err != nil {
		return err
	}
	defer s3.srv.Close()
	byQueue[s3q] = &demoRun{name: "S3", queue: s3q}
	queues[s3q] = 1
	var mu sync.Mutex
	// One handler for both: files to the directory, and s3:// to the
	// embedded server (resume records and progress in the demo's Redis).
	up, err := upload.New(upload.Config{Roots: []string{dir}, Redis: rdb, S3: s3.config(), PartSize: demoPartSize, Logger: log})
	if err != nil {
		return err
	}
	defer up.Close()
	// The upload handler, counting how many run at once per pattern.
	handle := func(ctx context.Context, a upload.Args) (upload.Result, error) {
		t, _ := worker.TaskFromContext(ctx)
		r := byQueue[t.Queue]
		mu.Lock()
		r.running++
		r.maxConc = max(r.maxConc, r.running)
		mu.Unlock()
		defer func() {
			mu.Lock()
			r.running--
			mu.Unlock()
		}()
		time.Sleep(5 * time.Millisecond) // a network's worth of latency
		return up.Run(ctx, a)
	}
	for i := 0; i < c.workers; i++ {
		w, err := worker.New(context.Background(), rdb, &worker.Config{Queues: queues, Concurrency: 16, Logger: log,
			Name: fmt.Sprintf("demo-%s-%d", stamp, i), BlockTimeout: 100 * time.Millisecond})
		if err != nil {
			return err
		}
		worker.Handle(w, handle)
		if err := w.Start(ctx); err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = w.Stop(sctx)
		}()
	}
	cl, err := client.New(context.Background(), rdb, &client.Config{Logger: log})
	if err != nil {
		return err
	}
	defer cl.Close()

	// The files: one set per pattern.
	specs := map[string][]client.Spec{}
	for _, r := range runs {
		in := filepath.Join(dir, r.name, "in")
		if err := os.MkdirAll(in, 0o755); err != nil {
			return err
		}
		for i := 0; i < c.n; i++ {
			name := fmt.Sprintf("file-%05d.txt", i)
			src := filepath.Join(in, name)
			if err := os.WriteFile(src, []byte(strings.Repeat(name+"\n", 1+i%64)), 0o644); err != nil {
				return err
			}
			specs[r.name] = append(specs[r.name], client.Spec{
				Args: upload.Args{Src: src, Dest: filepath.Join(dir, r.name, "out", name)},
				Opts: &client.EnqueueOpts{Queue: r.queue},
			})
		}
	}
	fmt.Fprintf(out, "uploading %d files with each pattern, %d workers, files in %s\n", c.n, c.workers, dir)
	for _, r := range runs {
		r.start = time.Now()
		switch r.name {
		case "ForkJoin":
			r.g, r.err = patterns.ForkJoin(ctx, cl, specs[r.name], nil, nil)
		case "InvokeAll":
			r.g, r.err = patterns.InvokeAll(ctx, cl, specs[r.name], c.limit, nil)
		case "Throttle":
			r.g, r.err = patterns.Throttle(ctx, cl, specs[r.name], c.rate, time.Second, nil)
		case "Spread":
			r.g, r.err = patterns.Spread(ctx, cl, specs[r.name], c.spread, nil)
		}
		if r.err != nil {
			return fmt.Errorf("demo: %s: %w", r.name, r.err)
		}
	}

	// Progress: one bar per pattern, from each group's counters.
	var p *mpb.Progress
	bars := map[string]*mpb.Bar{}
	if c.bars {
		p = mpb.New(mpb.WithOutput(out), mpb.WithWidth(40), mpb.WithRefreshRate(100*time.Millisecond))
		for _, r := range runs {
			bars[r.name] = p.AddBar(int64(c.n),
				mpb.PrependDecorators(decor.Name(fmt.Sprintf("%-10s", r.name)), decor.CountersNoUnit("%d/%d", decor.WCSyncWidth)),
				mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), decor.Elapsed(decor.ET_STYLE_GO, decor.WCSyncSpace)))
		}
	}
	left := len(runs)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for left > 0 {
		select {
		case <-ctx.Done():
			if p != nil {
				for _, b := range bars {
					b.Abort(false)
				}
				p.Wait()
			}
			return ctx.Err()
		case <-tick.C:
		}
		for _, r := range runs {
			if r.took > 0 {
				continue
			}
			pr, err := r.g.Progress(ctx)
			if err != nil {
				return err
			}
			if b := bars[r.name]; b != nil {
				b.SetCurrent(int64(pr.Done()))
			}
			if pr.Ended() {
				r.took = time.Since(r.start)
				if pr.Failed > 0 {
					r.err = fmt.Errorf("%d uploads failed", pr.Failed)
				}
				left--
			}
		}
	}
	if p != nil {
		p.Wait()
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pattern\ttasks\ttime\trate (tasks/s)\tmost at once\tresult\t")
	var failed error
	for _, r := range runs {
		res := "ok"
		if r.err != nil {
			res, failed = r.err.Error(), errors.Join(failed, fmt.Errorf("%s: %w", r.name, r.err))
		}
		mu.Lock()
		conc := r.maxConc
		mu.Unlock()
		fmt.Fprintf(tw, "%s\t%d\t%v\t%.0f\t%d\t%s\t\n", r.name, c.n, r.took.Round(time.Millisecond), float64(c.n)/r.took.Seconds(), conc, res)
	}
	_ = tw.Flush()
	fmt.Fprintf(out, "Asked for: InvokeAll at most %d at once (it ran at most %d), Throttle %d/s, Spread over %v. The rate column counts from the first enqueue to the last end.\n",
		c.limit, runs[1].maxConc, c.rate, c.spread)
	for _, r := range runs {
		fmt.Fprintf(out, "  %s group: %s (worker group %s)\n", r.name, r.g.ID(), r.g.ID())
	}
	if c.s3Small+c.s3Large > 0 {
		if err := s3.run(ctx, cl, dir, c.s3Small, c.s3Large, out); err != nil {
			failed = errors.Join(failed, err)
		}
	}
	return failed
}
