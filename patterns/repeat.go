package patterns

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// Schedule is a repeat schedule as declared by Repeat or RepeatCron.
type Schedule struct {
	c      *client.Client
	name   string
	queue  string
	status int
	next   time.Time
}

// Name is the schedule's name.
func (s *Schedule) Name() string { return s.name }

// Queue is the queue its tasks go to.
func (s *Schedule) Queue() string { return s.queue }

// Created reports whether the declaration made the schedule.
func (s *Schedule) Created() bool { return s.status == store.RepeatCreated }

// Updated reports whether the declaration changed an existing schedule (its
// task, queue or timing). Neither Created nor Updated: it was already
// declared exactly so.
func (s *Schedule) Updated() bool { return s.status == store.RepeatUpdated }

// Next is the schedule's next fire time as of the declaration (Redis' clock).
func (s *Schedule) Next() time.Time { return s.next }

// Remove removes the schedule (RemoveRepeat).
func (s *Schedule) Remove(ctx context.Context) error {
	_, err := RemoveRepeat(ctx, s.c, s.name)
	return err
}

// CronOpts configures RepeatCron; a nil *CronOpts means every default.
type CronOpts struct {
	// Location is the time zone whose wall time the expression is
	// evaluated in, by its IANA name (load it with time.LoadLocation;
	// every coordinator must have the time zone database). Defaults to
	// UTC.
	Location *time.Location
}

// Repeat is grab/async's Repeat across the fleet: it declares the schedule
// name, which enqueues spec's task every interval, first one interval from
// now. The schedule lives in Redis, not in the caller: ctx bounds only the
// declaration, and the schedule runs, through any coordinator (package
// coordinator; at least one must run), until RemoveRepeat, surviving every
// process restarting.
//
// Each slot's task is enqueued exactly once however many coordinators run,
// with the id "<queue>/r.<name>.<slot Unix ms>". When no coordinator ran for
// several slots, only the latest of them fires; the ones before are
// skipped, so a restart brings no burst of catch-up runs.
//
// Declaring is idempotent: every process may declare its schedules at boot;
// the same declaration again changes nothing and keeps the timing. (The
// task is compared by its encoding: args holding maps other than
// map[string]string, map[string]bool or map[string]any encode in random
// key order, so such a declaration counts as an update each time; the
// timing is kept all the same.) A
// declaration with the same name and a different task, queue or interval
// updates the schedule (a new interval restarts its timing from now; a new
// queue keeps it). Declarations and removals of one name racing from many
// processes end in one schedule or none.
// name follows [A-Za-z0-9._-], at most 104 bytes. spec's options may set
// the queue, attempts, timeout, retention, metadata, trace and rate key, but
// not ID, Deadline, ProcessAt or Delay.
func Repeat(ctx context.Context, c *client.Client, name string, spec client.Spec, interval time.Duration) (*Schedule, error) {
	if interval < time.Millisecond {
		return nil, fmt.Errorf("patterns.Repeat %q: interval is %v, must be at least 1ms", name, interval)
	}
	return declare(ctx, c, "patterns.Repeat", name, interval, "", "", spec)
}

// RepeatCron is Repeat on the times of the cron expression expr (five
// fields, minute hour day-of-month month day-of-week, or a descriptor such
// as @daily; the syntax is under "Cron expressions" in the package docs),
// evaluated in UTC unless opts.Location says otherwise. opts may be nil.
func RepeatCron(ctx context.Context, c *client.Client, name string, spec client.Spec, expr string, opts *CronOpts) (*Schedule, error) {
	var loc *time.Location
	if opts != nil {
		loc = opts.Location
	}
	tz := ""
	if loc != nil && loc != time.UTC {
		tz = loc.String()
		if tz == "" || tz == "Local" {
			return nil, fmt.Errorf("patterns.RepeatCron %q: CronOpts.Location needs a location loaded by IANA name (time.LoadLocation), not %q", name, tz)
		}
	}
	if _, err := store.ParseCron(expr, tz); err != nil {
		return nil, fmt.Errorf("patterns.RepeatCron %q: %w", name, err)
	}
	return declare(ctx, c, "patterns.RepeatCron", name, 0, expr, tz, spec)
}

func declare(ctx context.Context, c *client.Client, what, name string, every time.Duration, expr, tz string, spec client.Spec) (*Schedule, error) {
	if c == nil {
		return nil, fmt.Errorf("%s: client is nil", what)
	}
	if err := checkRepeatName(name); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if spec.Args == nil {
		return nil, fmt.Errorf("%s %q: spec.Args is nil", what, name)
	}
	queue, env, err := engineOf(c).Template(ctx, spec.Args, optsOf(spec.Opts), "")
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", what, name, err)
	}
	var nowMs int64
	if expr != "" {
		now, err := store.Time(ctx, engineOf(c).Redis())
		if err != nil {
			return nil, fmt.Errorf("%s %q: read redis time: %w", what, name, err)
		}
		nowMs = now.UnixMilli()
	}
	d := store.RepeatDef{Name: name, Queue: queue, Kind: spec.Args.Kind(), Every: every, Cron: expr, TZ: tz, Env: env}
	status, next, err := store.DeclareRepeat(ctx, engineOf(c).Redis(), d, nowMs)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", what, name, err)
	}
	return &Schedule{c: c, name: name, queue: queue, status: status, next: time.UnixMilli(next)}, nil
}

func checkRepeatName(name string) error {
	if err := keys.ValidateName("repeat", name); err != nil {
		return err
	}
	if len(name) > store.MaxRepeatName {
		return fmt.Errorf("repeat name %.32q... is %d bytes long, the limit is %d: %w", name, len(name), store.MaxRepeatName, keys.ErrInvalidName)
	}
	return nil
}

// RemoveRepeat removes the schedule name; false when there was none. Tasks
// it already enqueued stay (cancel them by id if need be).
func RemoveRepeat(ctx context.Context, c *client.Client, name string) (bool, error) {
	if c == nil {
		return false, errors.New("patterns.RemoveRepeat: client is nil")
	}
	if err := checkRepeatName(name); err != nil {
		return false, fmt.Errorf("patterns.RemoveRepeat: %w", err)
	}
	ok, err := store.RemoveRepeat(ctx, engineOf(c).Redis(), name)
	if err != nil {
		return false, fmt.Errorf("patterns.RemoveRepeat: %w", err)
	}
	return ok, nil
}

// RepeatInfo describes a repeat schedule.
type RepeatInfo struct {
	Name   string
	Queue  string
	Kind   string
	Every  time.Duration // 0 for a cron schedule
	Cron   string
	TZ     string    // time zone of Cron; "" is UTC
	Next   time.Time // next fire (Redis' clock)
	Last   string    // id of the last task fired, "" if none yet
	LastAt time.Time
	Fired  int64 // slots fired since the schedule was made
}

// Repeats lists every repeat schedule, by name.
func Repeats(ctx context.Context, c *client.Client) ([]RepeatInfo, error) {
	if c == nil {
		return nil, errors.New("patterns.Repeats: client is nil")
	}
	rs, err := store.ListRepeats(ctx, engineOf(c).Redis())
	if err != nil {
		return nil, fmt.Errorf("patterns.Repeats: %w", err)
	}
	out := make([]RepeatInfo, len(rs))
	for i, r := range rs {
		out[i] = RepeatInfo{Name: r.Name, Queue: r.Queue, Kind: r.Kind, Every: r.Every, Cron: r.Cron, TZ: r.TZ, Fired: r.Fired}
		if r.NextMs > 0 {
			out[i].Next = time.UnixMilli(r.NextMs)
		}
		if r.Last != "" {
			out[i].Last = keys.TaskID(r.Queue, r.Last)
			out[i].LastAt = time.UnixMilli(r.LastMs)
		}
	}
	return out, nil
}
