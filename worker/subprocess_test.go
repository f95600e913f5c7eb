package worker_test

// Worker subprocesses for the reliability tests in recovery_test.go.
//
// The test binary re-executes itself with ASYNC_TEST_SUBPROCESS=<role>;
// TestMain (main_test.go) then calls testenv.RunSubprocess, which runs
// subprocessMain below instead of the tests. The subprocess runs one
// worker.Worker whose handlers behave as the role says, and tells the test
// what happens through Redis lists (RPUSH here, BLPOP in the test).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// Task kinds of the recovery tests. The rcv prefix keeps them apart from the
// kinds of other test files of the package.
type rcvJob struct{ N int }

func (rcvJob) Kind() string { return "rcv.job" }

type rcvPoison struct{ N int }

func (rcvPoison) Kind() string { return "rcv.poison" }

type rcvNormal struct{ N int }

func (rcvNormal) Kind() string { return "rcv.normal" }

// rcvResult says who ran a task.
type rcvResult struct {
	By         string
	N          int
	Deliveries int
}

// Environment of a worker subprocess.
const (
	envRole        = "ASYNC_TEST_SUBPROCESS"
	envAddr        = "RCV_REDIS_ADDR"
	envQueue       = "RCV_QUEUE"
	envLease       = "RCV_LEASE_MS"
	envMaxDeliver  = "RCV_MAX_DELIVERIES"
	envConcurrency = "RCV_CONCURRENCY"
	envWork        = "RCV_WORK_MS"
)

// Subprocess roles.
const (
	// roleBlock: the rcv.job handler signals "started", then blocks until its
	// ctx ends (the test kills the process long before).
	roleBlock = "block"
	// rolePause: the rcv.job handler signals "started", works for RCV_WORK_MS
	// ignoring its ctx, then gives a lease that was lost up to two leases
	// to show in ctx, signals "report" (ctx error and cause) and returns a
	// result naming this process. The process then stops its worker, which
	// records (or fails to record) that result, signals "stopped" and exits 0.
	rolePause = "pause"
	// roleCrash: the rcv.poison handler signals "crashing" and calls
	// os.Exit(2); rcv.normal tasks succeed.
	roleCrash = "crash"
)

// Signal events.
const (
	evReady    = "ready"
	evStarted  = "started"
	evReport   = "report"
	evStopped  = "stopped"
	evCrashing = "crashing"
)

// rcvSignal is one message from a subprocess.
type rcvSignal struct {
	Pid        int
	Deliveries int
	CtxErr     string
	Cause      string
	LeaseLost  bool // errors.Is(context.Cause(ctx), worker.ErrLeaseLost)
}

// signalKey is the list a subprocess of queue pushes event signals to.
func signalKey(queue, event string) string {
	return "rcvtest:{q:" + queue + "}:sig:" + event
}

// extraRoles are subprocess roles defined in other test files of the
// package (crossproc_test.go); one runs instead of the worker roles below,
// with the same stdin and lifetime guards, and the process exits 0 when it
// returns.
var extraRoles = map[string]func(role string){
	roleXPCancel:   xpCancelMain,
	roleXPParent:   xpParentMain,
	roleXPParent1:  xpParentMain,
	roleXPRegister: xpRegisterMain,
}

func init() {
	testenv.SetSubprocessMain(subprocessMain)
}

func subprocessMain(role string) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "subprocess %s: "+format+"\n", append([]any{role}, args...)...)
		os.Exit(3)
	}
	// The test holds our stdin open; when it goes away, so do we. A hard
	// upper bound catches everything else.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		fmt.Fprintln(os.Stderr, "subprocess: stdin closed, exiting")
		os.Exit(4)
	}()
	time.AfterFunc(2*time.Minute, func() {
		fmt.Fprintln(os.Stderr, "subprocess: lived too long, exiting")
		os.Exit(5)
	})
	if f := extraRoles[role]; f != nil {
		f(role)
		os.Exit(0)
	}

	queue := os.Getenv(envQueue)
	leaseMs, err := strconv.Atoi(os.Getenv(envLease))
	if err != nil || queue == "" || os.Getenv(envAddr) == "" {
		fail("bad environment: %s=%q %s=%q %s=%q", envQueue, queue, envLease, os.Getenv(envLease), envAddr, os.Getenv(envAddr))
	}
	atoi := func(name string, def int) int {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				fail("%s=%q: %v", name, v, err)
			}
			return n
		}
		return def
	}
	lease := time.Duration(leaseMs) * time.Millisecond
	work := time.Duration(atoi(envWork, 0)) * time.Millisecond

	rdb := testenv.NewClient(os.Getenv(envAddr))
	pid := os.Getpid()
	signal := func(event string, s rcvSignal) {
		s.Pid = pid
		b, _ := json.Marshal(s)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := rdb.RPush(ctx, signalKey(queue, event), b).Err(); err != nil {
			fail("signal %s: %v", event, err)
		}
	}
	deliveries := func(ctx context.Context) int {
		tk, _ := worker.TaskFromContext(ctx)
		return tk.Deliveries
	}

	// One task at a time by default: a crashing worker takes nothing but
	// the poison task down with it.
	w, err := worker.New(context.Background(), rdb, &worker.Config{
		Queues:        map[string]int{queue: 1},
		Lease:         lease,
		MaxDeliveries: atoi(envMaxDeliver, 10),
		Concurrency:   atoi(envConcurrency, 1),
		FetchBatch:    1,
		BlockTimeout:  100 * time.Millisecond,
		Logger:        log,
	})
	if err != nil {
		fail("new worker: %v", err)
	}
	handled := make(chan struct{}, 1)
	switch role {
	case roleBlock:
		worker.Handle(w, func(ctx context.Context, a rcvJob) (rcvResult, error) {
			signal(evStarted, rcvSignal{Deliveries: deliveries(ctx)})
			<-ctx.Done()
			return rcvResult{}, context.Cause(ctx)
		})
	case rolePause:
		worker.Handle(w, func(ctx context.Context, a rcvJob) (rcvResult, error) {
			signal(evStarted, rcvSignal{Deliveries: deliveries(ctx)})
			time.Sleep(work) // the handler's work; it does not watch ctx
			// A worker whose lease is gone must have cancelled ctx by now
			// or within the lease; give it two.
			select {
			case <-ctx.Done():
			case <-time.After(2 * lease):
			}
			s := rcvSignal{Deliveries: deliveries(ctx), LeaseLost: errors.Is(context.Cause(ctx), worker.ErrLeaseLost)}
			if err := ctx.Err(); err != nil {
				s.CtxErr = err.Error()
			}
			if c := context.Cause(ctx); c != nil {
				s.Cause = c.Error()
			}
			signal(evReport, s)
			handled <- struct{}{}
			// Succeed regardless: recording this result must be refused
			// by the attempt-token fence in complete.lua.
			return rcvResult{By: "sub-" + strconv.Itoa(pid), N: a.N, Deliveries: s.Deliveries}, nil
		})
	case roleCrash:
		worker.Handle(w, func(ctx context.Context, a rcvPoison) (rcvResult, error) {
			signal(evCrashing, rcvSignal{Deliveries: deliveries(ctx)})
			os.Exit(2)
			return rcvResult{}, nil
		})
		worker.Handle(w, func(ctx context.Context, a rcvNormal) (rcvResult, error) {
			return rcvResult{By: "sub-" + strconv.Itoa(pid), N: a.N, Deliveries: deliveries(ctx)}, nil
		})
	default:
		fail("unknown role")
	}
	if err := w.Start(context.Background()); err != nil {
		fail("start worker: %v", err)
	}
	signal(evReady, rcvSignal{})
	<-handled
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Stop(ctx); err != nil {
		fail("stop worker: %v", err)
	}
	signal(evStopped, rcvSignal{})
	_ = rdb.Close()
	os.Exit(0)
}

// subWorker is a worker subprocess started by a test.
type subWorker struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{} // closed once Wait returned
	state  *os.ProcessState
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// subConfig is the worker configuration of a subprocess.
type subConfig struct {
	Lease         time.Duration
	MaxDeliveries int
	Concurrency   int
	Work          time.Duration
}

// startSubWorker starts a worker subprocess of role on b's queue. It is killed
// (if still running) and waited for in t.Cleanup; its output is logged when t
// failed.
func startSubWorker(t *testing.T, b *bundle, role string, cfg subConfig) *subWorker {
	t.Helper()
	return startSubWorkerEnv(t, b, role, cfg)
}

// startSubWorkerEnv is startSubWorker with extra environment variables.
func startSubWorkerEnv(t *testing.T, b *bundle, role string, cfg subConfig, env ...string) *subWorker {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		envRole+"="+role,
		envAddr+"="+b.env.Addr,
		envQueue+"="+b.queue,
		envLease+"="+strconv.FormatInt(cfg.Lease.Milliseconds(), 10),
		envWork+"="+strconv.FormatInt(cfg.Work.Milliseconds(), 10),
	)
	cmd.Env = append(cmd.Env, env...)
	if cfg.MaxDeliveries > 0 {
		cmd.Env = append(cmd.Env, envMaxDeliver+"="+strconv.Itoa(cfg.MaxDeliveries))
	}
	if cfg.Concurrency > 0 {
		cmd.Env = append(cmd.Env, envConcurrency+"="+strconv.Itoa(cfg.Concurrency))
	}
	s := &subWorker{t: t, cmd: cmd, out: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stdout = s.out
	cmd.Stderr = s.out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start worker subprocess: %v", err)
	}
	go func() {
		_ = cmd.Wait()
		s.state = cmd.ProcessState
		close(s.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-s.exited:
		default:
			_ = cmd.Process.Kill() // also ends a stopped process
			<-s.exited
		}
		_ = stdin.Close()
		if t.Failed() {
			t.Logf("output of worker subprocess %d (%s):\n%s", cmd.Process.Pid, role, s.out.String())
		}
	})
	return s
}

func (s *subWorker) pid() int { return s.cmd.Process.Pid }

func (s *subWorker) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("send %v to worker subprocess %d: %v", sig, s.pid(), err)
	}
}

// waitStopped waits until the process is stopped (state T in /proc), so
// that nothing it does can come after the caller's next step: a stop
// signal takes effect asynchronously, and late under load.
func (s *subWorker) waitStopped() {
	s.t.Helper()
	path := fmt.Sprintf("/proc/%d/stat", s.pid())
	testenv.Eventually(s.t, 10*time.Second, "worker subprocess stopped", func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		// The state follows the parenthesised command name.
		i := bytes.LastIndexByte(b, ')')
		return i >= 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't')
	})
}

// waitExit waits until the process exited and returns its exit code (-1 when
// a signal ended it).
func (s *subWorker) waitExit(timeout time.Duration) int {
	s.t.Helper()
	select {
	case <-s.exited:
		return s.state.ExitCode()
	case <-time.After(timeout):
		s.t.Fatalf("worker subprocess %d did not exit within %v", s.pid(), timeout)
		return 0
	}
}

// waitSignal waits (BLPOP) for the next event signal of b's queue.
func waitSignal(t *testing.T, b *bundle, event string, timeout time.Duration) rcvSignal {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
	defer cancel()
	v, err := b.env.RDB.BLPop(ctx, timeout, signalKey(b.queue, event)).Result()
	if errors.Is(err, redis.Nil) {
		t.Fatalf("no %q signal from a worker subprocess within %v", event, timeout)
	}
	if err != nil {
		t.Fatalf("wait for %q signal: %v", event, err)
	}
	var s rcvSignal
	if err := json.Unmarshal([]byte(v[1]), &s); err != nil {
		t.Fatalf("decode %q signal %q: %v", event, v[1], err)
	}
	return s
}

// cleanSignals deletes the signal lists of b's queue at the end of t.
func cleanSignals(t *testing.T, b *bundle) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var ks []string
		for _, e := range []string{evReady, evStarted, evReport, evStopped, evCrashing} {
			ks = append(ks, signalKey(b.queue, e))
		}
		_ = b.env.RDB.Del(ctx, ks...).Err()
	})
}
