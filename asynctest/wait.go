package asynctest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/patterns"
)

// defaultWaitTimeout bounds a wait when Options.WaitTimeout is zero.
const defaultWaitTimeout = 10 * time.Second

// pollEvery is how often a wait for a state that is not final reads it.
const pollEvery = 5 * time.Millisecond

// waitTimeout is the bound of every wait of f.
func (f *Fleet) waitTimeout() time.Duration {
	if f.opts.WaitTimeout > 0 {
		return f.opts.WaitTimeout
	}
	return defaultWaitTimeout
}

// infoLine describes a task's state for a failure message.
func infoLine(in *client.Info) string {
	if in == nil {
		return "not found"
	}
	s := fmt.Sprintf("%s (attempt %d of %d", in.State, in.Attempt, in.MaxAttempts)
	if in.LastError != "" {
		s += fmt.Sprintf(", last error %q", in.LastError)
	}
	return s + ")"
}

// WaitTask waits until task id is in state want and returns its Info. It
// fails the test, saying the state the task was in (its attempt and last
// error) and what was wanted, when Options.WaitTimeout (10s by default)
// passes, or at once when the task ended in another state.
//
// A final state (client.StateSucceeded, StateDead, StateCancelled) is waited
// for on the library's notification of the task's end, as Handle.Outcome
// does. Any other state is read every few milliseconds: a state the task
// passes through faster than that (running, for a quick handler) may be
// missed, and the wait then fails once the task ended. A task not found yet
// (a continuation not registered yet, say) is waited for too.
func (f *Fleet) WaitTask(id string, want client.State) *client.Info {
	f.t.Helper()
	h, err := f.client.Task(id)
	if err != nil {
		f.t.Fatalf("asynctest: WaitTask(%q): %v", id, err)
		return nil
	}
	timeout := f.waitTimeout()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	in, msg := waitTask(ctx, h, want)
	if msg == "" {
		return in
	}
	if ctx.Err() != nil {
		// Read once more, for the message, past the wait's own deadline.
		rctx, done := context.WithTimeout(context.Background(), time.Second)
		if last, err := h.Info(rctx); err == nil {
			in = last
		}
		done()
		msg = fmt.Sprintf("is still %s after %v", infoLine(in), timeout)
	}
	f.t.Fatalf("asynctest: task %s: wanted state %s; it %s", id, want, msg)
	return nil
}

// waitTask waits for h's task to be in state want; it returns its Info, or
// what happened instead ("" when it got there).
func waitTask(ctx context.Context, h *client.Handle, want client.State) (*client.Info, string) {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var last *client.Info
	for {
		in, err := h.Info(ctx)
		switch {
		case err == nil:
			last = in
			if in.State == want {
				return in, ""
			}
			if in.State.Final() {
				return in, fmt.Sprintf("ended %s", infoLine(in))
			}
			if want.Final() {
				// Its end is announced: wait for it, then read it.
				_, err := h.Outcome(ctx)
				var te *client.TaskError
				if err == nil || errors.As(err, &te) {
					continue
				}
				if ctx.Err() != nil {
					return last, "timed out"
				}
			}
		case errors.Is(err, client.ErrNotFound):
		case ctx.Err() != nil:
			return last, "timed out"
		default:
			return last, fmt.Sprintf("is unreadable: %v", err)
		}
		select {
		case <-ctx.Done():
			return last, "timed out"
		case <-tick.C:
		}
	}
}

// WaitGroup waits until group id is in state want and returns its
// progress. It fails the test when Options.WaitTimeout passes, or at once
// when the group ended in another state, with the progress it saw and the
// state of each member. A final state is waited for on the library's
// notification (Group.Wait); patterns.GroupRunning is read at once.
func (f *Fleet) WaitGroup(id string, want patterns.GroupState) patterns.Progress {
	f.t.Helper()
	g, err := patterns.Open(f.client, id)
	if err != nil {
		f.t.Fatalf("asynctest: WaitGroup(%q): %v", id, err)
		return patterns.Progress{}
	}
	timeout := f.waitTimeout()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var p patterns.Progress
	if want.Final() {
		p, err = g.Wait(ctx)
	} else {
		p, err = g.Progress(ctx)
	}
	if err == nil && p.State == want {
		return p
	}
	rctx, done := context.WithTimeout(context.Background(), 2*time.Second)
	defer done()
	var why string
	switch {
	case ctx.Err() != nil:
		if last, err := g.Progress(rctx); err == nil {
			p = last
		}
		why = fmt.Sprintf("still %s after %v", p.State, timeout)
	case err != nil:
		f.t.Fatalf("asynctest: group %s: wanted state %s; reading it failed: %v", id, want, err)
		return p
	default:
		why = string(p.State)
	}
	f.t.Fatalf("asynctest: group %s: wanted state %s; it is %s: %s", id, want, why, groupLine(rctx, g, p))
	return p
}

// maxListed bounds the members a group's failure message names.
const maxListed = 20

// groupLine describes a group's progress and its members by state.
func groupLine(ctx context.Context, g *patterns.Group, p patterns.Progress) string {
	s := fmt.Sprintf("%d members, %d succeeded, %d failed, %d not ended", p.Total, p.Succeeded, p.Failed, p.Total-p.Done())
	hs, err := g.Members(ctx)
	if err != nil {
		return s + fmt.Sprintf(" (members unreadable: %v)", err)
	}
	byState := map[string][]string{}
	for i, h := range hs {
		st := "unknown"
		if h == nil {
			st = "not enqueued"
		} else if in, err := h.Info(ctx); err == nil {
			st = string(in.State)
			if in.LastError != "" && i < maxListed {
				byState[st] = append(byState[st], fmt.Sprintf("%s (%q)", h.ID(), in.LastError))
				continue
			}
		}
		id := "#" + fmt.Sprint(i)
		if h != nil {
			id = h.ID()
		}
		if i >= maxListed {
			id = "..."
		}
		byState[st] = append(byState[st], id)
	}
	states := make([]string, 0, len(byState))
	for st := range byState {
		states = append(states, st)
	}
	slices.Sort(states)
	var b strings.Builder
	b.WriteString(s)
	for _, st := range states {
		ids := slices.Compact(byState[st])
		fmt.Fprintf(&b, "\n\t%s: %s", st, strings.Join(ids, ", "))
	}
	return b.String()
}

// WaitResult waits until the task h names succeeded and returns its result
// decoded into an R (as client.Result does). It fails the test with the
// task's end (its state, attempt and last error) if it ended otherwise, or
// with the state it was in when Options.WaitTimeout passed.
func WaitResult[R any](f *Fleet, h *client.Handle) R {
	f.t.Helper()
	timeout := f.waitTimeout()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := client.Result[R](ctx, h)
	if err == nil {
		return r
	}
	var te *client.TaskError
	switch {
	case errors.As(err, &te):
		f.t.Fatalf("asynctest: task %s: wanted it to succeed; it ended %s (attempt %d, last error %q)", h.ID(), te.State, te.Attempt, te.Message)
	case ctx.Err() != nil:
		rctx, done := context.WithTimeout(context.Background(), time.Second)
		in, _ := h.Info(rctx)
		done()
		f.t.Fatalf("asynctest: task %s: wanted it to succeed; still %s after %v", h.ID(), infoLine(in), timeout)
	default:
		f.t.Fatalf("asynctest: task %s: wanted its result: %v", h.ID(), err)
	}
	return r
}
