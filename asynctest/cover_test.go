package asynctest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// The accessors give the fleet's parts: its miniredis (nil on a real
// Redis), its workers in order, its coordinator (nil with NoCoordinator)
// and an inspector of its Redis.
func TestFleetAccessors(t *testing.T) {
	t.Parallel()
	register := func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Mail) (string, error) { return a.To, nil })
	}
	f := NewFleet(t, register, &Options{Workers: 2})
	if (f.Miniredis() == nil) != f.Real() {
		t.Errorf("Miniredis %v with Real %v", f.Miniredis(), f.Real())
	}
	if m := f.Miniredis(); m != nil && m.Addr() != f.ropts.Addr {
		t.Errorf("Miniredis at %s, the fleet's Redis at %s", m.Addr(), f.ropts.Addr)
	}
	ws := f.Workers()
	if len(ws) != 2 || ws[0] == ws[1] {
		t.Fatalf("Workers %v, want 2", ws)
	}
	more := f.StartWorkers(1, register)
	if ws := f.Workers(); len(ws) != 3 || ws[2] != more[0] {
		t.Errorf("Workers after StartWorkers %v, want the new one last", ws)
	}
	if f.Coordinator() == nil {
		t.Error("no Coordinator")
	}
	ctx := context.Background()
	h, err := f.Client().Enqueue(ctx, Mail{To: "ann"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	in, err := f.Inspector().Task(ctx, h.ID())
	if err != nil || in.ID != h.ID() {
		t.Fatalf("Inspector().Task(%s): %v, %v", h.ID(), in, err)
	}
	if g := NewFleet(t, nil, &Options{NoCoordinator: true, Embedded: true}); g.Coordinator() != nil {
		t.Error("a Coordinator with NoCoordinator")
	}
}

// A Throttle of 4 members at 1 per hour, under a stopped clock: the first
// member starts at once, and each Advance of an hour lets exactly one more
// start; the others wait (scheduled) in Redis meanwhile.
func TestThrottleHourlyAdvance(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	ran := map[int]bool{}
	runs := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(ran)
	}
	f := NewFleet(t, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Size) (int, error) {
			mu.Lock()
			ran[a.N] = true
			mu.Unlock()
			return a.N, nil
		})
	}, &Options{Clock: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC), Workers: 2})
	ctx := context.Background()
	specs := []client.Spec{{Args: Size{1}}, {Args: Size{2}}, {Args: Size{3}}, {Args: Size{4}}}
	g, err := patterns.Throttle(ctx, f.Client(), specs, 1, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := g.Members(ctx)
	if err != nil || len(ms) != 4 {
		t.Fatalf("members %v, %v", ms, err)
	}
	for i := 1; i <= 4; i++ {
		if i > 1 {
			f.Advance(time.Hour)
		}
		// One more member ran; the others wait for their turn in Redis
		// (scheduled: nothing runs until the next Advance).
		testenv.Eventually(t, f.opts.WaitTimeout, "the member of the hour", func() bool { return runs() >= i })
		for k, h := range ms {
			// Members are in submission order: ms[k] runs Size{k+1}. One
			// that ran is succeeded once its outcome is recorded; one that
			// did not waits for its turn.
			mu.Lock()
			didRun := ran[k+1]
			mu.Unlock()
			if didRun {
				f.WaitTask(h.ID(), client.StateSucceeded)
			} else {
				f.WaitTask(h.ID(), client.StateScheduled)
			}
		}
		if n := runs(); n != i {
			t.Fatalf("after %d hour(s): %d members ran, want %d", i-1, n, i)
		}
	}
	if p := f.WaitGroup(g.ID(), patterns.GroupSucceeded); p.Succeeded != 4 {
		t.Errorf("group %+v, want 4 succeeded", p)
	}
}

// envChild runs the test of a child process TestCleanupFailureAtTestLine
// starts.
const envChild = "ASYNCTEST_CLEANUP_CHILD"

// A failure of the fleet's cleanup (here its leak check) is reported at the
// test's line that made the fleet, not inside the kit: the child process
// runs a test that leaks, and its output names that line.
func TestCleanupFailureAtTestLine(t *testing.T) {
	if os.Getenv(envChild) != "" {
		leakAtLine(t)
		return
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCleanupFailureAtTestLine$", "-test.count=1")
	cmd.Env = append(os.Environ(), envChild+"=1")
	out, _ := cmd.CombinedOutput()
	m := regexp.MustCompile(`fleet made at cover_test.go:(\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("the child did not say where it made its fleet:\n%s", out)
	}
	want := fmt.Sprintf("    cover_test.go:%s: asynctest: 1 goroutine(s) of the fleet still run", m[1])
	if !strings.Contains(string(out), want) {
		t.Errorf("the leak is not reported at the test's line (want %q):\n%s", want, out)
	}
}

func leakAtLine(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	_, _, line, _ := runtime.Caller(0)
	t.Logf("fleet made at cover_test.go:%d", line+2)
	f := NewFleet(t, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, _ Leaky) (int, error) {
			go leftBehind(release)
			return 1, nil
		})
	}, &Options{leakBound: 100 * time.Millisecond, Embedded: true})
	h, err := f.Client().Enqueue(context.Background(), Leaky{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	WaitResult[int](f, h)
}
