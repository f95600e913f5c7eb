package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/s3fake"
	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/ratelimit"
	uploads "github.com/taskfleet/async/upload"
	"github.com/taskfleet/async/worker"
)

// The upload phases: files from a temporary directory through a
// fleet (client, worker, the upload handler with its defaults) into the
// in-process S3 server (internal/s3fake), each next to a plain minio-go
// program uploading the same files with the same client settings and the
// same concurrency, in the same run.

// uploadRatioTarget is the fleet's least rate as a share of the plain
// program's.
const uploadRatioTarget = 0.9

const (
	uploadBucket   = "bench"
	uploadSeed     = 19   // the small files' sizes and bytes
	uploadEnqueue  = 1000 // tasks per EnqueueMany call of the small phase
	uploadMinSize  = 1 << 10
	uploadMaxSize  = 64 << 10
	uploadDeadline = 10 * time.Minute
)

// uploadSizes are the workloads of the upload phases.
type uploadSizes struct {
	Reps  int   // runs of each side; medians are reported
	Files int   // small files
	Big   int64 // bytes of the big file
}

func uploadSizesFor(quick bool) uploadSizes {
	if quick {
		return uploadSizes{Reps: 1, Files: 1000, Big: 64 << 20}
	}
	return uploadSizes{Reps: 3, Files: 10000, Big: 1 << 30}
}

// uploadTmp is the phases' temporary directory while it exists, for the
// SIGINT path (removeUploadTemp).
var uploadTmp atomic.Pointer[string]

// removeUploadTemp removes the upload phases' temporary directory, if any.
func removeUploadTemp() {
	if p := uploadTmp.Swap(nil); p != nil {
		_ = os.RemoveAll(*p)
	}
}

// uploadSide is one side's run of one measurement.
type uploadSide struct {
	Res   *result // Rate is files (or objects) per second
	Bytes int64
	MBps  float64 // 10^6 bytes per second
	S3Req float64 // requests the S3 server served, per file

	// The fleet's Redis round trips per file as its processes' go-redis
	// clients made them (a pipeline is one), by command or script, with
	// the mean time of one (pool wait included).
	Trips map[string]tripStat
}

// tripStat is a count of round trips and their time.
type tripStat struct {
	N    float64       // per file
	Cmds float64       // commands in one (pipelines)
	D    time.Duration // mean of one
}

// scriptNames names the scripts an upload fleet runs, by SHA-1.
var scriptNames = func() map[string]string {
	m := map[string]string{}
	for name, s := range map[string]*redis.Script{
		"enqueue": script.Enqueue, "complete": script.Complete, "heartbeat": script.Heartbeat, "reclaim": script.Reclaim,
		"adopt": script.Adopt, "housekeep": script.Housekeep, "state": script.State, "ratelimit": script.RateLimit,
		"workerreg": script.WorkerReg, "qstats": script.QStats, "claim": script.Claim, "wake": script.Wake,
		"pgset": script.ProgressSet, "gpset": script.GroupProgressSet,
		"upbegin": script.UpBegin, "uppart": script.UpPart, "upend": script.UpEnd,
	} {
		m[s.Hash()] = name
	}
	return m
}()

// tripCounter is a go-redis hook that counts round trips by command (a
// script by name, a pipeline by its commands) and sums their time.
type tripCounter struct {
	mu sync.Mutex
	m  map[string]*tripSum
}

type tripSum struct {
	n, cmds int64
	d       time.Duration
}

func newTripCounter() *tripCounter { return &tripCounter{m: map[string]*tripSum{}} }

func (c *tripCounter) add(name string, d time.Duration) { c.addN(name, 1, d) }

// addN counts one round trip of cmds commands.
func (c *tripCounter) addN(name string, cmds int, d time.Duration) {
	c.mu.Lock()
	s := c.m[name]
	if s == nil {
		s = &tripSum{}
		c.m[name] = s
	}
	s.n++
	s.cmds += int64(cmds)
	s.d += d
	c.mu.Unlock()
}

func tripName(cmd redis.Cmder) string {
	name := cmd.Name()
	if name == "evalsha" || name == "eval" {
		if a := cmd.Args(); len(a) > 1 {
			if sha, ok := a[1].(string); ok {
				if n, ok := scriptNames[sha]; ok {
					return name + " " + n
				}
			}
			if name == "eval" {
				return "eval (a script loaded)"
			}
		}
	}
	return name
}

func (c *tripCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *tripCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		t := time.Now()
		err := next(ctx, cmd)
		c.add(tripName(cmd), time.Since(t))
		return err
	}
}

func (c *tripCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		t := time.Now()
		err := next(ctx, cmds)
		seen := map[string]bool{}
		var names []string
		for _, cmd := range cmds {
			if n := tripName(cmd); !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
		c.addN("pipeline ("+strings.Join(names, ", ")+")", len(cmds), time.Since(t))
		return err
	}
}

// reset forgets what was counted.
func (c *tripCounter) reset() {
	c.mu.Lock()
	c.m = map[string]*tripSum{}
	c.mu.Unlock()
}

// per returns the counts per file of files.
func (c *tripCounter) per(files int) map[string]tripStat {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]tripStat{}
	for k, s := range c.m {
		out[k] = tripStat{N: float64(s.n) / float64(files), Cmds: float64(s.cmds) / float64(max(s.n, 1)), D: s.d / time.Duration(max(s.n, 1))}
	}
	return out
}

// tripsLine renders trips, most first.
func tripsLine(trips map[string]tripStat) string {
	type kv struct {
		k string
		v tripStat
	}
	var s []kv
	total := 0.0
	for k, v := range trips {
		s = append(s, kv{k, v})
		total += v.N
	}
	sort.Slice(s, func(i, j int) bool { return s[i].v.N > s[j].v.N || s[i].v.N == s[j].v.N && s[i].k < s[j].k })
	parts := make([]string, 0, len(s))
	for _, x := range s {
		if x.v.N < 0.0005 {
			continue
		}
		if x.v.Cmds > 1 {
			parts = append(parts, fmt.Sprintf("%s %.3f (%.1f commands, %s each)", x.k, x.v.N, x.v.Cmds, ms(x.v.D)))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.3f (%s each)", x.k, x.v.N, ms(x.v.D)))
	}
	return fmt.Sprintf("%.2f in all: %s", total, strings.Join(parts, ", "))
}

// uploadPair is one run of each side, and the fleet's ratio.
type uploadPair struct {
	Fleet, Plain *uploadSide
	FleetFirst   bool
	Ratio        float64 // fleet ÷ plain, by bytes per second (the same as by files)
}

// uploadInfo is the upload section of the report.
type uploadInfo struct {
	Sizes       uploadSizes
	Conc        int   // the worker's Concurrency, and the plain program's goroutines
	SmallBytes  int64 // all the small files together
	PartSize    int64 // the handler's default part size
	PartConc    int   // ... and parts at once
	DefaultRate ratelimit.Limit

	Small []uploadPair // the handler's defaults
	Lean  []uploadPair // the same without the request limit and the HEAD
	Big   []uploadPair

	Errs []string
}

// uploadFiles writes n files of uploadMinSize to uploadMaxSize random bytes
// (sizes and bytes from uploadSeed) into dir, and returns their paths and
// sizes.
func uploadFiles(dir string, n int) ([]string, []int64, error) {
	r := rand.New(rand.NewPCG(uploadSeed, uploadSeed))
	src := rand.NewChaCha8([32]byte{uploadSeed})
	buf := make([]byte, uploadMaxSize)
	paths, sizes := make([]string, n), make([]int64, n)
	for i := range n {
		size := uploadMinSize + r.IntN(uploadMaxSize-uploadMinSize+1)
		_, _ = src.Read(buf[:size])
		p := filepath.Join(dir, fmt.Sprintf("small/%05d.bin", i))
		if i == 0 {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return nil, nil, err
			}
		}
		if err := os.WriteFile(p, buf[:size], 0o644); err != nil {
			return nil, nil, err
		}
		paths[i], sizes[i] = p, int64(size)
	}
	return paths, sizes, nil
}

// uploadBigFile writes size random bytes to dir/big.bin.
func uploadBigFile(dir string, size int64) (string, error) {
	p := filepath.Join(dir, "big.bin")
	f, err := os.Create(p)
	if err != nil {
		return "", err
	}
	src := rand.NewChaCha8([32]byte{uploadSeed, 1})
	if _, err := io.Copy(f, io.LimitReader(src, size)); err != nil {
		f.Close()
		return "", err
	}
	return p, f.Close()
}

// uploadKey is the object key of a file under dir.
func uploadKey(dir, p string) string {
	rel, _ := filepath.Rel(dir, p)
	return filepath.ToSlash(rel)
}

// newS3 starts an empty in-process S3 server with the bench's bucket.
func newS3() (*s3fake.Server, error) {
	return s3fake.New(s3fake.Options{Buckets: []string{uploadBucket}})
}

// closeS3 stops s3 and gives its memory back (a big run leaves a 1 GB
// object in it).
func closeS3(s3 *s3fake.Server) {
	_ = s3.Close()
	runtime.GC()
	debug.FreeOSMemory()
}

// plainClient is the baseline's client: minio-go with the settings the
// handler gives its own (upload/s3.go: static credentials, path style, the
// default region, one try per call, up to 64 idle connections to the host).
func plainClient(s3 *s3fake.Server) (*minio.Client, *http.Transport, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	c, err := minio.New(s3.Endpoint(), &minio.Options{
		Creds:        credentials.NewStaticV4(s3.AccessKey(), s3.SecretKey(), ""),
		Secure:       false,
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
		Transport:    tr,
		MaxRetries:   1,
	})
	return c, tr, err
}

// fleetS3 is the handler's S3 configuration for s3.
func fleetS3(s3 *s3fake.Server) uploads.S3Config {
	return uploads.S3Config{Endpoint: s3.Endpoint(), Insecure: true, PathStyle: true,
		AccessKey: s3.AccessKey(), SecretKey: s3.SecretKey()}
}

// uploadRun runs the upload phases.
func (e *env) uploadRun(ctx context.Context, quick, small, big bool) (*uploadInfo, error) {
	// Conc, PartSize and PartConc are the worker's and the handler's
	// defaults (worker.Config.Concurrency, upload.Config.PartSize and
	// PartConcurrency), which the fleet runs with and the plain side copies.
	ui := &uploadInfo{Sizes: uploadSizesFor(quick), Conc: 100, PartSize: 16 << 20, PartConc: 4, DefaultRate: uploads.DefaultRequestRate}
	dir, err := os.MkdirTemp("", "bench-upload-*")
	if err != nil {
		return nil, err
	}
	uploadTmp.Store(&dir)
	defer removeUploadTemp()

	if small {
		fmt.Fprintf(e.progress, "  writing %d files of %d–%d bytes into %s\n", ui.Sizes.Files, uploadMinSize, uploadMaxSize, dir)
		paths, sizes, err := uploadFiles(dir, ui.Sizes.Files)
		if err != nil {
			return nil, err
		}
		for _, s := range sizes {
			ui.SmallBytes += s
		}
		for _, lean := range []bool{false, true} {
			name := "defaults"
			if lean {
				name = "no request limit, SkipHead"
			}
			for i := range ui.Sizes.Reps {
				fleetFirst := i%2 == 0
				pr, err := e.uploadPair(fleetFirst, fmt.Sprintf("small files (%s), run %d of %d", name, i+1, ui.Sizes.Reps),
					func() (*uploadSide, error) { return e.uploadSmallFleet(ctx, dir, paths, sizes, ui.Conc, lean, "") },
					func() (*uploadSide, error) { return e.uploadSmallPlain(ctx, dir, paths, sizes, ui.Conc) })
				if err != nil {
					ui.Errs = append(ui.Errs, err.Error())
					break
				}
				if lean {
					ui.Lean = append(ui.Lean, pr)
				} else {
					ui.Small = append(ui.Small, pr)
				}
			}
		}
		if e.profDir != "" {
			fmt.Fprintln(e.progress, "  profiled small files through the fleet, defaults (not in the table)")
			if s, err := e.uploadSmallFleet(ctx, dir, paths, sizes, ui.Conc, false, "upload-small"); err != nil {
				ui.Errs = append(ui.Errs, err.Error())
			} else {
				fmt.Fprintf(e.progress, "  %s -> %s\n", s.Res.brief(), filepath.Join(e.profDir, "upload-small.pprof"))
			}
			fmt.Fprintln(e.progress, "  profiled small files through the fleet, no request limit, SkipHead (not in the table)")
			if s, err := e.uploadSmallFleet(ctx, dir, paths, sizes, ui.Conc, true, "upload-small-lean"); err != nil {
				ui.Errs = append(ui.Errs, err.Error())
			} else {
				fmt.Fprintf(e.progress, "  %s -> %s\n", s.Res.brief(), filepath.Join(e.profDir, "upload-small-lean.pprof"))
			}
			fmt.Fprintln(e.progress, "  profiled small files, plain minio-go (not in the table)")
			if s, err := e.uploadSmallPlainProf(ctx, dir, paths, sizes, ui.Conc, "upload-small-plain"); err != nil {
				ui.Errs = append(ui.Errs, err.Error())
			} else {
				fmt.Fprintf(e.progress, "  %s -> %s\n", s.Res.brief(), filepath.Join(e.profDir, "upload-small-plain.pprof"))
			}
		}
		if err := os.RemoveAll(filepath.Join(dir, "small")); err != nil {
			return nil, err
		}
	}

	if big {
		fmt.Fprintf(e.progress, "  writing %d bytes into %s\n", ui.Sizes.Big, filepath.Join(dir, "big.bin"))
		p, err := uploadBigFile(dir, ui.Sizes.Big)
		if err != nil {
			return nil, err
		}
		for i := range ui.Sizes.Reps {
			fleetFirst := i%2 == 0
			pr, err := e.uploadPair(fleetFirst, fmt.Sprintf("one file of %d bytes, run %d of %d", ui.Sizes.Big, i+1, ui.Sizes.Reps),
				func() (*uploadSide, error) { return e.uploadBigFleet(ctx, dir, p, ui.Sizes.Big, "") },
				func() (*uploadSide, error) {
					return e.uploadBigPlain(ctx, dir, p, ui.Sizes.Big, ui.PartSize, ui.PartConc, "")
				})
			if err != nil {
				ui.Errs = append(ui.Errs, err.Error())
				break
			}
			ui.Big = append(ui.Big, pr)
		}
		if e.profDir != "" {
			fmt.Fprintln(e.progress, "  profiled the big file through the fleet (not in the table)")
			if s, err := e.uploadBigFleet(ctx, dir, p, ui.Sizes.Big, "upload-big"); err != nil {
				ui.Errs = append(ui.Errs, err.Error())
			} else {
				fmt.Fprintf(e.progress, "  %.1f MB/s -> %s\n", s.MBps, filepath.Join(e.profDir, "upload-big.pprof"))
			}
			fmt.Fprintln(e.progress, "  profiled the big file, plain minio-go (not in the table)")
			if s, err := e.uploadBigPlain(ctx, dir, p, ui.Sizes.Big, ui.PartSize, ui.PartConc, "upload-big-plain"); err != nil {
				ui.Errs = append(ui.Errs, err.Error())
			} else {
				fmt.Fprintf(e.progress, "  %.1f MB/s -> %s\n", s.MBps, filepath.Join(e.profDir, "upload-big-plain.pprof"))
			}
		}
	}
	return ui, nil
}

// uploadPair runs the fleet and the plain side once each, in the order
// fleetFirst says.
func (e *env) uploadPair(fleetFirst bool, what string, fleet, plain func() (*uploadSide, error)) (uploadPair, error) {
	pr := uploadPair{FleetFirst: fleetFirst}
	runFleet := func() error {
		fmt.Fprintf(e.progress, "  fleet: %s\n", what)
		s, err := fleet()
		if err == nil {
			pr.Fleet = s
			fmt.Fprintf(e.progress, "    %.1f MB/s; %s\n", s.MBps, s.Res.brief())
			fmt.Fprintf(e.progress, "    S3 requests %.2f per file; Redis round trips per file %s\n", s.S3Req, tripsLine(s.Trips))
		}
		return err
	}
	runPlain := func() error {
		fmt.Fprintf(e.progress, "  plain minio-go: %s\n", what)
		s, err := plain()
		if err == nil {
			pr.Plain = s
			fmt.Fprintf(e.progress, "    %.1f MB/s; %s; S3 requests %.2f per file\n", s.MBps, s.Res.brief(), s.S3Req)
		}
		return err
	}
	order := []func() error{runFleet, runPlain}
	if !fleetFirst {
		order = []func() error{runPlain, runFleet}
	}
	for _, f := range order {
		if err := f(); err != nil {
			return pr, err
		}
	}
	pr.Ratio = pr.Fleet.MBps / pr.Plain.MBps
	fmt.Fprintf(e.progress, "    fleet ÷ plain %.2f\n", pr.Ratio)
	return pr, nil
}

func sideOf(r *result, bytes int64) *uploadSide {
	return &uploadSide{Res: r, Bytes: bytes, MBps: float64(bytes) / r.Dur.Seconds() / 1e6}
}

// uploadFleet is a fleet of one client and one worker serving a fresh
// queue with the upload handler on s3; done stops and closes them.
type uploadFleet struct {
	c     *client.Client
	q     string
	ok    atomic.Int64 // handler runs that returned a result
	fails atomic.Int64 // ... and that failed
	last  atomic.Value // the last failure
	all   chan struct{}
	trips *tripCounter // round trips of the client's and the worker's Redis clients
	done  func()
}

// With lean the handler runs without the request limit and without the
// HEAD after each upload (RequestRate off, S3Config.SkipHead).
func (e *env) startUploadFleet(ctx context.Context, dir string, s3 *s3fake.Server, n int, lean bool) (*uploadFleet, error) {
	f := &uploadFleet{q: e.queue("upload"), all: make(chan struct{}), trips: newTripCounter()}
	crdb := redis.NewClient(&redis.Options{Addr: e.addr, ContextTimeoutEnabled: true})
	crdb.AddHook(f.trips)
	c, err := client.New(context.Background(), crdb, &client.Config{Logger: e.logger})
	if err != nil {
		_ = crdb.Close()
		return nil, err
	}
	f.c = c
	// go-redis' defaults (pool of 10 per CPU), with ctx deadlines honoured
	// as the worker asks.
	wrdb := redis.NewClient(&redis.Options{Addr: e.addr, ContextTimeoutEnabled: true})
	wrdb.AddHook(f.trips)
	cfg := uploads.Config{Roots: []string{dir}, Redis: wrdb, S3: fleetS3(s3), Logger: e.logger}
	if lean {
		cfg.RequestRate = ratelimit.Limit{Rate: -1}
		cfg.S3.SkipHead = true
	}
	h, err := uploads.New(cfg)
	if err != nil {
		_ = c.Close()
		_ = crdb.Close()
		_ = wrdb.Close()
		return nil, err
	}
	w, err := worker.New(context.Background(), wrdb, &worker.Config{Queues: map[string]int{f.q: 1}, Logger: e.logger})
	if err != nil {
		h.Close()
		_ = c.Close()
		_ = crdb.Close()
		_ = wrdb.Close()
		return nil, err
	}
	// The handler as upload.Register registers it, counting what it returns.
	worker.Handle(w, func(ctx context.Context, a uploads.Args) (uploads.Result, error) {
		res, err := h.Run(ctx, a)
		if err != nil {
			f.fails.Add(1)
			f.last.Store(err.Error())
			return res, err
		}
		if f.ok.Add(1) == int64(n) {
			close(f.all)
		}
		return res, nil
	})
	if err := w.Start(ctx); err != nil {
		h.Close()
		_ = c.Close()
		_ = crdb.Close()
		_ = wrdb.Close()
		return nil, err
	}
	f.done = func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = w.Stop(sctx)
		h.Close()
		_ = e.reset(ctx, f.q)
		_ = c.Close()
		_ = crdb.Close()
		_ = wrdb.Close()
	}
	return f, nil
}

// wait waits until the handler succeeded n times and every outcome is
// written (nothing pending), counting its own commands in mine.
func (f *uploadFleet) wait(ctx context.Context, e *env, n int, mine own) (own, error) {
	select {
	case <-f.all:
	case <-time.After(uploadDeadline):
		return nil, fmt.Errorf("%d of %d uploads succeeded in %v (%d failed attempts; last: %v)", f.ok.Load(), n, uploadDeadline, f.fails.Load(), f.last.Load())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return e.waitAcked(ctx, f.q, mine)
}

// check fails unless every task succeeded at its first attempt.
func (f *uploadFleet) check(ctx context.Context, e *env, n int) error {
	end, err := e.in.Queue(ctx, f.q)
	if err != nil {
		return err
	}
	if end.Read != int64(n) || end.Running != 0 || end.Waiting != 0 || end.Scheduled != 0 || end.Dead != 0 {
		return fmt.Errorf("end state %+v, want read %d, nothing running, waiting, scheduled or dead", end, n)
	}
	if fl := f.fails.Load(); fl != 0 {
		return fmt.Errorf("%d failed attempts (last: %v)", fl, f.last.Load())
	}
	return nil
}

// uploadSmallFleet uploads the small files through a fleet: the worker
// (default Concurrency, conc) runs first, idle; the measurement is from the
// first EnqueueMany to the last outcome written.
func (e *env) uploadSmallFleet(ctx context.Context, dir string, paths []string, sizes []int64, conc int, lean bool, profile string) (*uploadSide, error) {
	s3, err := newS3()
	if err != nil {
		return nil, err
	}
	defer closeS3(s3)
	f, err := e.startUploadFleet(ctx, dir, s3, len(paths), lean)
	if err != nil {
		return nil, err
	}
	defer f.done()
	opts := &client.EnqueueOpts{Queue: f.q}
	specs := make([]client.Spec, len(paths))
	var total int64
	for i, p := range paths {
		specs[i] = client.Spec{Args: uploads.Args{Src: p, Dest: "s3://" + uploadBucket + "/" + uploadKey(dir, p)}, Opts: opts}
		total += sizes[i]
	}
	name := "upload small files, fleet"
	var trips map[string]tripStat
	f.trips.reset()
	r, err := e.measure(ctx, name, len(paths), profile, func() (own, error) {
		for i := 0; i < len(specs); i += uploadEnqueue {
			if _, err := f.c.EnqueueMany(ctx, specs[i:min(i+uploadEnqueue, len(specs))]); err != nil {
				return nil, err
			}
		}
		mine, err := f.wait(ctx, e, len(paths), own{})
		trips = f.trips.per(len(paths))
		return mine, err
	})
	if err != nil {
		return nil, err
	}
	if err := f.check(ctx, e, len(paths)); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if st := s3.Stats(); st.PutObjects != int64(len(paths)) || st.ObjectBytes != total {
		return nil, fmt.Errorf("%s: the server stored %d objects of %d bytes, want %d of %d", name, st.PutObjects, st.ObjectBytes, len(paths), total)
	}
	r.Settings = fmt.Sprintf("worker Concurrency %d; handler defaults", conc)
	if lean {
		r.Settings = fmt.Sprintf("worker Concurrency %d; handler defaults but no RequestRate and SkipHead", conc)
	}
	sd := sideOf(r, total)
	sd.S3Req = float64(s3.Stats().Requests) / float64(len(paths))
	sd.Trips = trips
	return sd, nil
}

// uploadSmallPlain uploads the small files with minio-go alone: conc
// goroutines take the next file, open it and PutObject it.
func (e *env) uploadSmallPlain(ctx context.Context, dir string, paths []string, sizes []int64, conc int) (*uploadSide, error) {
	return e.uploadSmallPlainProf(ctx, dir, paths, sizes, conc, "")
}

func (e *env) uploadSmallPlainProf(ctx context.Context, dir string, paths []string, sizes []int64, conc int, profile string) (*uploadSide, error) {
	s3, err := newS3()
	if err != nil {
		return nil, err
	}
	defer closeS3(s3)
	mc, tr, err := plainClient(s3)
	if err != nil {
		return nil, err
	}
	defer tr.CloseIdleConnections()
	var total int64
	for _, s := range sizes {
		total += s
	}
	name := "upload small files, plain minio-go"
	r, err := e.measure(ctx, name, len(paths), profile, func() (own, error) {
		var next atomic.Int64
		return nil, fanOut(conc, func(int) error {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(paths) {
					return nil
				}
				if err := plainPut(ctx, mc, dir, paths[i], minio.PutObjectOptions{ContentType: "application/octet-stream"}); err != nil {
					return err
				}
			}
		})
	})
	if err != nil {
		return nil, err
	}
	if st := s3.Stats(); st.PutObjects != int64(len(paths)) || st.ObjectBytes != total {
		return nil, fmt.Errorf("%s: the server stored %d objects of %d bytes, want %d of %d", name, st.PutObjects, st.ObjectBytes, len(paths), total)
	}
	r.Settings = fmt.Sprintf("%d goroutines, minio-go PutObject", conc)
	sd := sideOf(r, total)
	sd.S3Req = float64(s3.Stats().Requests) / float64(len(paths))
	return sd, nil
}

// plainPut opens p and PutObjects it under its key.
func plainPut(ctx context.Context, mc *minio.Client, dir, p string, opts minio.PutObjectOptions) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	info, err := mc.PutObject(ctx, uploadBucket, uploadKey(dir, p), f, st.Size(), opts)
	if err != nil {
		return fmt.Errorf("PutObject %s: %w", p, err)
	}
	if info.Size != st.Size() {
		return fmt.Errorf("PutObject %s: %d bytes stored of %d", p, info.Size, st.Size())
	}
	return nil
}

// uploadBigFleet uploads the big file as one task (the handler's default
// part size and parts at once), from its Enqueue to its outcome written.
func (e *env) uploadBigFleet(ctx context.Context, dir, p string, size int64, profile string) (*uploadSide, error) {
	s3, err := newS3()
	if err != nil {
		return nil, err
	}
	defer closeS3(s3)
	f, err := e.startUploadFleet(ctx, dir, s3, 1, false)
	if err != nil {
		return nil, err
	}
	defer f.done()
	key := uploadKey(dir, p)
	name := "upload a big file, fleet"
	var trips map[string]tripStat
	f.trips.reset()
	r, err := e.measure(ctx, name, 1, profile, func() (own, error) {
		if _, err := f.c.Enqueue(ctx, uploads.Args{Src: p, Dest: "s3://" + uploadBucket + "/" + key}, &client.EnqueueOpts{Queue: f.q}); err != nil {
			return nil, err
		}
		mine, err := f.wait(ctx, e, 1, own{})
		trips = f.trips.per(1)
		return mine, err
	})
	if err != nil {
		return nil, err
	}
	if err := f.check(ctx, e, 1); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := bigStored(s3, key, size); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	sd := sideOf(r, size)
	sd.S3Req = float64(s3.Stats().Requests)
	sd.Trips = trips
	return sd, nil
}

// uploadBigPlain uploads the big file with minio-go's PutObject, parts of
// partSize, threads at once.
func (e *env) uploadBigPlain(ctx context.Context, dir, p string, size, partSize int64, threads int, profile string) (*uploadSide, error) {
	s3, err := newS3()
	if err != nil {
		return nil, err
	}
	defer closeS3(s3)
	mc, tr, err := plainClient(s3)
	if err != nil {
		return nil, err
	}
	defer tr.CloseIdleConnections()
	key := uploadKey(dir, p)
	name := "upload a big file, plain minio-go"
	r, err := e.measure(ctx, name, 1, profile, func() (own, error) {
		return nil, plainPut(ctx, mc, dir, p, minio.PutObjectOptions{ContentType: "application/octet-stream", PartSize: uint64(partSize), NumThreads: uint(threads)})
	})
	if err != nil {
		return nil, err
	}
	if err := bigStored(s3, key, size); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	sd := sideOf(r, size)
	sd.S3Req = float64(s3.Stats().Requests)
	return sd, nil
}

// bigStored checks that the server holds an object of size bytes at key,
// made of parts.
func bigStored(s3 *s3fake.Server, key string, size int64) error {
	oi, err := s3.Info(uploadBucket, key)
	if err != nil {
		return err
	}
	if oi.Size != size {
		return fmt.Errorf("the server holds %d bytes at %s, want %d", oi.Size, key, size)
	}
	if st := s3.Stats(); st.Completed != 1 || st.PartBytes != size {
		return fmt.Errorf("the server completed %d multipart uploads of %d part bytes, want 1 of %d", st.Completed, st.PartBytes, size)
	}
	return nil
}

// uploadMedian is the pair whose side's MB/s is the median.
func uploadMedian(ps []uploadPair, side func(uploadPair) *uploadSide) *uploadSide {
	return side(medianBy(ps, func(p uploadPair) float64 { return side(p).MBps }))
}

func fleetOf(p uploadPair) *uploadSide { return p.Fleet }
func plainOf(p uploadPair) *uploadSide { return p.Plain }

func uploadRatios(ps []uploadPair) []float64 {
	out := make([]float64, len(ps))
	for i, p := range ps {
		out[i] = p.Ratio
	}
	return out
}

// markdown renders the upload section.
func (ui *uploadInfo) markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("### Uploads to S3\n\n")
	if len(ui.Small)+len(ui.Lean)+len(ui.Big) > 0 {
		p("| Measurement | Target | Fleet (median) | Plain minio-go (median) | Fleet ÷ plain (median of the pairs) | Met |\n|---|--:|--:|--:|--:|:-:|\n")
	}
	smallRows := func(name string, ps []uploadPair, target bool) {
		if len(ps) == 0 {
			return
		}
		f, pl := uploadMedian(ps, fleetOf), uploadMedian(ps, plainOf)
		ratio := medianFloat(uploadRatios(ps))
		t, ok := "—", "—"
		if target {
			t, ok = fmt.Sprintf("≥ %.1f×", uploadRatioTarget), met(ratio >= uploadRatioTarget)
		}
		p("| %s: files/s | %s | %s | %s | %.2f | %s |\n", name, t, thousands(f.Res.Rate), thousands(pl.Res.Rate), ratio, ok)
		p("| … MB/s | | %.1f | %.1f | | |\n", f.MBps, pl.MBps)
	}
	smallRows(fmt.Sprintf("%s files of 1–64 KiB, handler defaults", thousands(float64(ui.Sizes.Files))), ui.Small, true)
	smallRows("… no request limit and SkipHead (else defaults)", ui.Lean, false)
	if len(ui.Big) > 0 {
		f, pl := uploadMedian(ui.Big, fleetOf), uploadMedian(ui.Big, plainOf)
		ratio := medianFloat(uploadRatios(ui.Big))
		p("| One file of %s bytes, one task: MB/s | ≥ %.1f× | %.1f | %.1f | %.2f | %s |\n",
			thousands(float64(ui.Sizes.Big)), uploadRatioTarget, f.MBps, pl.MBps, ratio, met(ratio >= uploadRatioTarget))
	}
	p("\n")
	runs := func(ps []uploadPair) string {
		var s []string
		for _, x := range ps {
			first := "plain first"
			if x.FleetFirst {
				first = "fleet first"
			}
			s = append(s, fmt.Sprintf("%.1f / %.1f MB/s = %.2f (%s; other load %.2f / %.2f cores)", x.Fleet.MBps, x.Plain.MBps, x.Ratio, first, x.Fleet.Res.Other, x.Plain.Res.Other))
		}
		return strings.Join(s, "; ")
	}
	cost := func(name string, ps []uploadPair, per string) {
		if len(ps) == 0 {
			return
		}
		f, pl := uploadMedian(ps, fleetOf), uploadMedian(ps, plainOf)
		cpu := fmt.Sprintf("Go CPU %.0f µs fleet, %.0f µs plain", f.Res.GoCPUus, pl.Res.GoCPUus)
		rcpu := fmt.Sprintf("%.1f µs", f.Res.RedisCPUus)
		if per == "object" {
			cpu = fmt.Sprintf("Go CPU %.1f s fleet, %.1f s plain (%.1f and %.1f ns a byte)", f.Res.GoCPUus/1e6, pl.Res.GoCPUus/1e6,
				f.Res.GoCPUus*1e3/float64(f.Bytes), pl.Res.GoCPUus*1e3/float64(pl.Bytes))
			rcpu = fmt.Sprintf("%.0f ms", f.Res.RedisCPUus/1e3)
		}
		p("- %s, runs in order (fleet / plain): %s. Per %s (the median runs): %s (the S3 server's included: it runs in the bench process); "+
			"S3 requests %.2f fleet, %.2f plain; Redis CPU %s; Redis round trips of the fleet's clients %s; "+
			"Redis commands executed %.2f (scripts' inner commands included): %s.\n",
			name, runs(ps), per, cpu, f.S3Req, pl.S3Req, rcpu, tripsLine(f.Trips), f.Res.Cmds, byCmd(f.Res.ByCmd, f.Res.UsecByCmd))
	}
	if len(ui.Small) > 0 {
		p("- Small files: %s files, %s bytes in all (sizes uniform in 1,024–65,536 bytes, seed %d), written once to a temporary directory; "+
			"each run uploads them all into a fresh in-process S3 server (internal/s3fake). Fleet: one client and one worker (Concurrency %d, go-redis defaults) "+
			"running upload.Handler with its defaults (request limit %d/s per bucket, burst %d; progress; no HEAD after a single PUT: its reply's MD5 ETag is the check); "+
			"the worker is started and idle first, and the run is timed from the first of %d EnqueueMany calls of %d tasks to the last outcome written (nothing pending). "+
			"Plain: %d goroutines of minio-go's Client.PutObject (os.Open, Stat, PutObject) with the handler's client settings, timed from the first open to the last reply.\n",
			thousands(float64(ui.Sizes.Files)), thousands(float64(ui.SmallBytes)), uploadSeed, ui.Conc,
			int(ui.DefaultRate.Rate), ui.DefaultRate.Burst, (ui.Sizes.Files+uploadEnqueue-1)/uploadEnqueue, uploadEnqueue, ui.Conc)
	}
	cost("Small files, handler defaults", ui.Small, "file")
	cost("Small files, no request limit and SkipHead", ui.Lean, "file")
	if len(ui.Big) > 0 {
		p("- Big file: one task (the handler's default PartSize %d MiB, PartConcurrency %d), timed from its Enqueue to its outcome written; "+
			"plain: Client.PutObject of the open file with PartSize %d MiB and NumThreads %d (minio-go's parallel ReadAt path). A fresh server per run.\n",
			ui.PartSize>>20, ui.PartConc, ui.PartSize>>20, ui.PartConc)
	}
	cost("Big file", ui.Big, "object")
	for _, s := range ui.Errs {
		p("- failed: %s\n", s)
	}
	p("\n")
	return b.String()
}
