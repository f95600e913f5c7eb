package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/worker"
)

// drainWorkerFlag runs the bench binary as a worker subprocess of the
// two-process drain.
const drainWorkerFlag = "drain-worker"

// drainPids are the pids of the running drain worker subprocesses, whose
// CPU counts as the bench's own (goCPU).
var drainPids atomic.Pointer[[]int64]

// drainProc is one worker subprocess of the two-process drain.
type drainProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	exited chan struct{}
}

// startDrainProc starts the bench binary as a worker of q with default
// settings, and waits until it said "ready" (its worker is made, not
// started: it starts at a "go" line on its stdin).
func (e *env) startDrainProc(q string) (*drainProc, error) {
	cmd, stdin, stdout, err := e.startSelf(drainWorkerFlag, q)
	if err != nil {
		return nil, err
	}
	p := &drainProc{cmd: cmd, stdin: stdin, exited: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	select {
	case <-ready:
		return p, nil
	case <-p.exited:
		return nil, errors.New("the drain worker subprocess exited at start")
	case <-time.After(15 * time.Second):
		p.stop()
		return nil, errors.New("the drain worker subprocess was not ready after 15 s")
	}
}

// start tells the subprocess to start its worker.
func (p *drainProc) start() error {
	_, err := io.WriteString(p.stdin, "go\n")
	return err
}

// stop closes its stdin (the worker stops and the process exits), or kills
// it by pid after 15 s.
func (p *drainProc) stop() {
	_ = p.stdin.Close()
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// runDrainWorker is the subprocess side: a worker of queue with default
// settings (only Queues set) and a no-op handler; it says "ready" on stdout,
// starts at a "go" line on stdin and stops at EOF.
func runDrainWorker(addr, queue string) int {
	if addr == "" {
		fmt.Fprintln(os.Stderr, "bench worker: --redis is required")
		return 2
	}
	e := &env{addr: addr, progress: os.Stderr}
	rdb := e.newRedis()
	defer rdb.Close()
	w, err := worker.New(context.Background(), rdb, &worker.Config{Queues: map[string]int{queue: 1}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench worker:", err)
		return 1
	}
	worker.Handle(w, func(ctx context.Context, a noop) (struct{}, error) { return struct{}{}, nil })
	fmt.Fprintln(os.Stdout, "ready")
	in := bufio.NewReader(os.Stdin)
	if line, err := in.ReadString('\n'); err != nil || line != "go\n" {
		return 0 // stopped before it started
	}
	if err := w.Start(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "bench worker:", err)
		return 1
	}
	_, _ = io.Copy(io.Discard, in)
	e.stopWorker(w)
	return 0
}

// procDrain pre-enqueues n no-op tasks, starts procs worker subprocesses
// (default settings) and measures from their start until every entry was
// delivered and none is pending (polled with XINFO GROUPS, whose calls are
// left out of the command counts).
func (e *env) procDrain(ctx context.Context, n, procs int) (*result, error) {
	c, q, done, err := e.session(ctx, "procs")
	if err != nil {
		return nil, err
	}
	defer done()
	for sent := 0; sent < n; sent += 10000 {
		if _, err := c.EnqueueMany(ctx, noopSpecs(min(10000, n-sent), q)); err != nil {
			return nil, err
		}
	}
	stream := keys.ForQueue(q).Stream()
	last, err := e.admin.XRevRangeN(ctx, stream, "+", "-", 1).Result()
	if err != nil || len(last) != 1 {
		return nil, fmt.Errorf("last entry of %s: %v", stream, err)
	}
	lastID := last[0].ID
	var ps []*drainProc
	defer func() {
		drainPids.Store(nil)
		for _, p := range ps {
			p.stop()
		}
	}()
	pids := []int64{}
	for i := 0; i < procs; i++ {
		p, err := e.startDrainProc(q)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
		pids = append(pids, int64(p.cmd.Process.Pid))
	}
	drainPids.Store(&pids)
	r, err := e.measure(ctx, fmt.Sprintf("Drain, %d worker processes", procs), n, "", func() (own, error) {
		for _, p := range ps {
			if err := p.start(); err != nil {
				return nil, err
			}
		}
		mine := own{}
		deadline := time.Now().Add(2 * time.Minute)
		for {
			mine["xinfo|groups"]++
			gs, err := e.admin.XInfoGroups(ctx, stream).Result()
			if err != nil && err != redis.Nil {
				return nil, err
			}
			// Drained: the group has read past the last task enqueued, has
			// nothing left to read and nothing pending. A worker hands an
			// entry it read ahead back to the stream as a new entry (the
			// read-ahead's 10 ms bound), so the group may end past lastID.
			if len(gs) == 1 && !idBefore(gs[0].LastDeliveredID, lastID) && gs[0].Lag == 0 && gs[0].Pending == 0 {
				return mine, nil
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("not drained after 2 minutes: %+v", gs)
			}
			time.Sleep(time.Millisecond)
		}
	})
	if err != nil {
		return nil, err
	}
	end, err := e.in.Queue(ctx, q)
	if err != nil {
		return nil, err
	}
	// Every task succeeded once; the group may have read more entries
	// than tasks, since an entry handed back (the read-ahead's 10 ms
	// bound) is read again as a new entry.
	if end.Succeeded != int64(n) || end.Read < int64(n) || end.Running != 0 || end.Waiting != 0 || end.Scheduled != 0 || end.Dead != 0 {
		return nil, fmt.Errorf("drain end state: %+v, want %d succeeded, at least %d read, running 0, waiting 0, scheduled 0, dead 0", end, n, n)
	}
	r.Settings = fmt.Sprintf("%d worker process(es) (the bench binary, `--%s`), defaults (worker.Config sets only Queues)", procs, drainWorkerFlag)
	return r, nil
}

// startSelf starts the bench binary itself as a subprocess with the
// internal flag flag (its value q) on the bench's Redis, its stderr going to
// the bench's progress output, and returns its stdin and stdout.
func (e *env) startSelf(flag, q string) (*exec.Cmd, io.WriteCloser, io.ReadCloser, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, nil, err
	}
	cmd := exec.Command(exe, "--"+flag, q, "--redis", e.addr)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	cmd.Stderr = e.progress
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, err
	}
	return cmd, stdin, stdout, nil
}

// idBefore reports whether stream entry id a comes before b; an id that
// does not parse comes before every other.
func idBefore(a, b string) bool {
	am, as, aok := splitEntryID(a)
	bm, bs, bok := splitEntryID(b)
	if !aok || !bok {
		return !aok && bok
	}
	return am < bm || am == bm && as < bs
}

func splitEntryID(id string) (ms, seq uint64, ok bool) {
	i := strings.IndexByte(id, '-')
	if i < 0 {
		return 0, 0, false
	}
	ms, err1 := strconv.ParseUint(id[:i], 10, 64)
	seq, err2 := strconv.ParseUint(id[i+1:], 10, 64)
	return ms, seq, err1 == nil && err2 == nil
}
