package asynctest_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskfleet/async/asynctest"
	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/patterns"
	"github.com/taskfleet/async/worker"
)

// The code blocks of README "Testing your code", each as it is there (the
// README elides the imports), but for those of readme_fleet_test.go:
// TestReadmeBlocksAreHere checks that every Go block of the section is in
// one of the two files, word for word, so what the README shows compiles
// and passes. The types' names differ from block to block
// (they share this package).

// readmeTestFiles hold the README's examples: this file, and
// readme_fleet_test.go (the fleet, Repeat, FailNext examples).
var readmeTestFiles = []string{"readme_test.go", "readme_fleet_test.go"}

// TestReadmeBlocksAreHere fails when a Go block of README "Testing your
// code" is not in this file as it is written there.
func TestReadmeBlocksAreHere(t *testing.T) {
	var src []byte
	for _, name := range readmeTestFiles {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		src = append(src, b...)
	}
	blocks := readmeBlocks(t, "../README.md", "## Testing your code")
	if len(blocks) < 10 {
		t.Fatalf("%d Go blocks in README's \"Testing your code\", want a block per case (10 at least)", len(blocks))
	}
	for i, b := range blocks {
		if !strings.Contains(string(src), b) {
			t.Errorf("README \"Testing your code\", Go block %d is in none of %v as written:\n%s", i+1, readmeTestFiles, b)
		}
	}
}

// readmeBlocks returns the ```go blocks of the section of file that opens
// with the line heading (up to the next "## " heading).
func readmeBlocks(t *testing.T, file, heading string) []string {
	t.Helper()
	fh, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var blocks []string
	var cur *strings.Builder
	in := false
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == heading:
			in = true
		case in && strings.HasPrefix(line, "## "):
			in = false
		case !in:
		case cur == nil && line == "```go":
			cur = &strings.Builder{}
		case cur != nil && line == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line)
			cur.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(blocks) == 0 {
		t.Fatalf("no Go block under %q in %s", heading, file)
	}
	return blocks
}

type Signup struct {
	Email string
	Plan  string
}

func (Signup) Kind() string { return "signup" }

type WelcomeMail struct{ To string }

func (WelcomeMail) Kind() string { return "welcome-mail" }

type Invoice struct{ Email string }

func (Invoice) Kind() string { return "invoice" }

type Resize struct{ Width int }

func (Resize) Kind() string { return "resize" }

type Collect struct{}

func (Collect) Kind() string { return "collect" }

func TestSignupFlow(t *testing.T) {
	t.Parallel()
	// The workers serve "default" and "mail"; they start once the handlers
	// can use the fleet's client.
	f := asynctest.NewFleet(t, nil, &asynctest.Options{Worker: worker.Config{Queues: map[string]int{"default": 1, "mail": 1}}})
	f.StartWorkers(1, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, s Signup) (string, error) {
			// Enqueued from the handler's ctx: a child of the signup task.
			if _, err := f.Client().Enqueue(ctx, WelcomeMail{To: s.Email}, &client.EnqueueOpts{Queue: "mail"}); err != nil {
				return "", err
			}
			if s.Plan != "free" {
				if _, err := f.Client().Enqueue(ctx, Invoice{Email: s.Email}, nil); err != nil {
					return "", err
				}
			}
			return "ok", nil
		})
		worker.Handle(w, func(ctx context.Context, m WelcomeMail) (string, error) { return "sent to " + m.To, nil })
		worker.Handle(w, func(ctx context.Context, r Resize) (int, error) { return r.Width / 2, nil })
		worker.Handle(w, func(ctx context.Context, _ Collect) (int, error) {
			ws, err := patterns.JoinResults[int](ctx)
			if err != nil {
				return 0, err
			}
			sum := 0
			for _, w := range ws {
				sum += w
			}
			return sum, nil
		})
	})
	ctx := context.Background()

	h, err := f.Client().Enqueue(ctx, Signup{Email: "ann@example.com", Plan: "free"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Wait for the handler to have run: WaitTask fails the test at once,
	// with the task's last error, if it went dead instead.
	f.WaitTask(h.ID(), client.StateSucceeded)

	// The welcome mail was enqueued by the signup's handler, to "mail".
	mail := asynctest.RequireEnqueued(f, WelcomeMail{To: "ann@example.com"},
		&asynctest.Want{Queue: "mail", Parent: h.ID(), Count: 1})
	f.WaitTask(mail.ID, client.StateSucceeded)
	// A free plan is not invoiced.
	asynctest.RequireNotEnqueued(f, "invoice", nil)

	// A fork/join: wait for the group, then for the join's result.
	g, err := patterns.ForkJoin(ctx, f.Client(),
		[]client.Spec{{Args: Resize{Width: 100}}, {Args: Resize{Width: 60}}},
		&client.Spec{Args: Collect{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.WaitGroup(g.ID(), patterns.GroupSucceeded)
	join, err := g.Join(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sum := asynctest.WaitResult[int](f, join); sum != 80 {
		t.Fatalf("join's result %d, want 80", sum)
	}
	// Everything of a kind, typed, in order.
	if rs := asynctest.EnqueuedArgs[Resize](f); len(rs) != 2 || rs[0].Width != 100 {
		t.Fatalf("resizes enqueued: %+v", rs)
	}
	asynctest.RequireEnqueuedKind(f, "resize", &asynctest.Want{Group: g.ID(), Count: 2})
}

type Crop struct {
	Path  string
	Width int
}

func (Crop) Kind() string { return "crop" }

func crop(ctx context.Context, a Crop) (string, error) {
	task, _ := worker.TaskFromContext(ctx)
	if a.Width <= 0 {
		return "", worker.Permanent(fmt.Errorf("width %d", a.Width))
	}
	return fmt.Sprintf("%s@%d (attempt %d, tenant %s)", a.Path, a.Width, task.Attempt, worker.Meta(ctx)["tenant"]), nil
}

func TestCrop(t *testing.T) {
	t.Parallel()
	f := asynctest.NewFleet(t, nil, nil) // no workers: Run needs none

	res := asynctest.Run(f, crop, Crop{Path: "a.png", Width: 64}, &asynctest.RunOpts{
		Attempt:  2,
		Meta:     map[string]string{"tenant": "acme"},
		Deadline: time.Now().Add(time.Minute),
	})
	if res.Err != nil || res.Value != "a.png@64 (attempt 2, tenant acme)" {
		t.Fatalf("crop = %q, %v", res.Value, res.Err)
	}

	res = asynctest.Run(f, crop, Crop{Path: "a.png"}, nil)
	var perm *worker.PermanentError
	if !errors.As(res.Err, &perm) {
		t.Fatalf("want a permanent error, got %v", res.Err)
	}
}

type Notify struct{ To string }

func (Notify) Kind() string { return "notify" }

func notify(ctx context.Context, a Notify) (string, error) {
	url, err := worker.ParentResult[string](ctx)
	if errors.Is(err, client.ErrDead) {
		return "sorry " + a.To, nil
	}
	if err != nil {
		return "", err
	}
	return a.To + ": " + url, nil
}

func TestNotify(t *testing.T) {
	t.Parallel()
	f := asynctest.NewFleet(t, nil, nil)

	ok := asynctest.Succeeded("https://cdn/a.png")
	res := asynctest.Run(f, notify, Notify{To: "ada"}, &asynctest.RunOpts{Parent: &ok})
	if res.Value != "ada: https://cdn/a.png" {
		t.Fatalf("got %q, %v", res.Value, res.Err)
	}

	dead := asynctest.Dead("disk full")
	res = asynctest.Run(f, notify, Notify{To: "ada"}, &asynctest.RunOpts{Parent: &dead})
	if res.Value != "sorry ada" {
		t.Fatalf("got %q, %v", res.Value, res.Err)
	}
}

type Tally struct{}

func (Tally) Kind() string { return "tally" }

func tally(ctx context.Context, _ Tally) (int, error) {
	outs, _ := patterns.JoinOutcomes(ctx) // its error joins the members' errors
	sum := 0
	for _, o := range outs { // the members that succeeded count
		if n, err := patterns.ResultOf[int](o); err == nil {
			sum += n
		}
	}
	return sum, nil
}

func TestTally(t *testing.T) {
	t.Parallel()
	f := asynctest.NewFleet(t, nil, nil)
	res := asynctest.Run(f, tally, Tally{}, &asynctest.RunOpts{Join: []asynctest.End{
		asynctest.Succeeded(3),
		asynctest.Dead("timeout"),
		asynctest.Cancelled(),
		asynctest.Succeeded(4),
	}})
	if res.Err != nil || res.Value != 7 {
		t.Fatalf("tally = %d, %v", res.Value, res.Err)
	}
}

type Line struct{ Text string }

func (Line) Kind() string { return "line" }

func countWords(ctx context.Context, lines []Line) ([]int, error) {
	out := make([]int, len(lines))
	bad := worker.BatchErrors{}
	for i, l := range lines {
		if l.Text == "" {
			bad[i] = errors.New("empty line")
			continue
		}
		out[i] = len(strings.Fields(l.Text))
	}
	if len(bad) > 0 {
		return out, bad
	}
	return out, nil
}

func TestCountWords(t *testing.T) {
	t.Parallel()
	f := asynctest.NewFleet(t, nil, nil)
	res := asynctest.RunBatch(f, countWords, []Line{{"a b"}, {""}, {"c"}}, nil)
	if res.Err != nil || res.Results[0] != 2 || res.Results[2] != 1 || res.Failed[1] == nil {
		t.Fatalf("countWords = %v, failed %v, %v", res.Results, res.Failed, res.Err)
	}
}

type Register struct{ Email string }

func (Register) Kind() string { return "register" }

type Greeting struct{ Email string }

func (Greeting) Kind() string { return "greeting" }

func TestRegisterGreets(t *testing.T) {
	t.Parallel()
	f := asynctest.NewFleet(t, nil, nil)
	register := func(ctx context.Context, a Register) (struct{}, error) {
		_, err := f.Client().Enqueue(ctx, Greeting{Email: a.Email}, nil) // a child of the task
		return struct{}{}, err
	}
	res := asynctest.Run(f, register, Register{Email: "ada@example.com"}, &asynctest.RunOpts{
		Meta: map[string]string{"tenant": "acme"},
	})
	if res.Err != nil || len(res.Children) != 1 {
		t.Fatalf("register: %v, children %+v", res.Err, res.Children)
	}
	c := res.Children[0]
	if c.Args.(Greeting).Email != "ada@example.com" || c.Parent != res.Task.ID || c.Opts.Meta["tenant"] != "acme" {
		t.Fatalf("child %+v", c)
	}
	asynctest.RequireEnqueued(f, Greeting{Email: "ada@example.com"}, &asynctest.Want{Parent: res.Task.ID, Count: 1})
}

type Parcel struct{ Order string }

func (Parcel) Kind() string { return "parcel" }

func TestParcelSentOnce(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	runs, parcels := 0, map[string]int{} // parcels: what the carrier was asked to send
	f := asynctest.NewFleet(t, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, p Parcel) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			runs++
			if parcels[p.Order] == 0 { // idempotent: one parcel per order, however many runs
				parcels[p.Order]++
			}
			return "sent " + p.Order, nil
		})
	}, &asynctest.Options{Workers: 2})

	// The worker that runs the task dies once the handler returned, before
	// its outcome is recorded: the other worker takes the task over.
	loss := f.LoseWorker("parcel", asynctest.LoseAfter)
	h, err := f.Client().Enqueue(context.Background(), Parcel{Order: "A-17"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	loss.Wait()
	if got := asynctest.WaitResult[string](f, h); got != "sent A-17" {
		t.Fatalf("result %q", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if runs != 2 || parcels["A-17"] != 1 {
		t.Fatalf("%d runs, %d parcels; want 2 runs and 1 parcel", runs, parcels["A-17"])
	}
}
