package worker

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// ReportProgress records how far the handler's task has got: done units of
// total (bytes, for an upload; total 0 when not known yet). Any process
// reads it with client.Handle.Progress; a group sums its members'
// (patterns.Progress.WorkDone and WorkTotal). Calls are cheap and may be
// made as often as the handler likes: writes to Redis are coalesced to a
// few per second per task, the last report is written before the attempt's
// end is recorded, and a handler that returns quickly writes nothing (but
// to its group, when it is a member that succeeded: see below).
// Outside a handler's ctx it does nothing. A failed write is logged, never
// returned: progress is advisory and never fails a task.
//
// In detail: a task's report is written at most once per 250ms, the first
// time 250ms after its handler started (a handler that returns before then
// writes nothing), on a goroutine of its own: the call only stores the
// numbers, and never waits for Redis. Once the handler returns, its last
// report is written before its end is recorded, if anything was written or
// a write was due; when the handler succeeded and total is above 0, done
// is written as total. A group's member that succeeded, with a total above
// 0, before its first write was due writes that total, done in full, to
// its group's progress only (so the group's WorkDone and WorkTotal count
// it; its own Handle.Progress stays empty, as for any quick task).
// Handlers may call it from several goroutines at once (parallel parts):
// the last call made wins. Bad numbers are clamped, not refused: a
// negative done or total counts as 0, and done above a total above 0 as
// total.
func ReportProgress(ctx context.Context, done, total int64) {
	t, ok := taskValueOf(ctx)
	if !ok || t.pg == nil {
		return
	}
	t.pg.report(done, total)
}

// ReportedProgress returns the last report the handler whose ctx is ctx
// made with ReportProgress (clamped as ReportProgress stores it), and
// whether it made any. A handler run alone (asynctest.Run) has its last
// report there, as nothing is written to Redis for it.
func ReportedProgress(ctx context.Context) (done, total int64, ok bool) {
	t, found := taskValueOf(ctx)
	if !found || t.pg == nil {
		return 0, 0, false
	}
	p := t.pg
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done, p.total, p.reported
}

// progressEvery is the least time between two writes of one task's report,
// and between its handler's start and the first.
const progressEvery = 250 * time.Millisecond

// progressWriteTimeout bounds one write (both calls, for a group member).
const progressWriteTimeout = 5 * time.Second

// progress is one attempt's reports (a taskValue's): the latest numbers,
// and the state of their writes. A handler's calls only update the numbers
// and arm a timer; the timer's goroutine writes (sink), so a write never
// holds up the handler, and at most one write of a run is in flight.
type progress struct {
	// write records one report (progressSink.write); nil for a handler run
	// alone: nothing is written.
	write func(done, total, n int64, last bool)
	// writeGroup records a last report in the task's group only
	// (progressSink.writeGroup); nil when the task is not a group's
	// member, or for a handler run alone.
	writeGroup func(done, total, n int64)
	every      time.Duration // progressEvery (tests shorten or stretch it)

	mu          sync.Mutex
	idle        sync.Cond // signalled when a write ends
	done, total int64     // the latest report, clamped
	reported    bool      // a report was made
	dirty       bool      // a report came after the last write took the numbers
	next        time.Time // the earliest time of the next write
	timer       *time.Timer
	writing     bool  // a write is in flight
	written     bool  // a write was made (whether or not it got through)
	n           int64 // writes made, for the fence (store.ProgressReport.N)
	ended       bool  // the handler returned: finish owns the last write
	wroteD      int64 // the numbers of the last write
	wroteT      int64
}

// progressSink is where a worker's run writes its reports: the task's
// progress hash, and its group's when it is a member of one.
type progressSink struct {
	w      *Worker
	q      keys.Queue
	key    string
	group  string // public group id, or ""
	report store.ProgressReport
}

func newProgress(sink *progressSink) *progress {
	p := &progress{every: progressEvery}
	if sink != nil {
		p.write = sink.write
		if sink.group != "" {
			p.writeGroup = sink.writeGroup
		}
	}
	p.idle.L = &p.mu
	return p
}

// begin marks the start of the handler: the first write is due
// progressEvery later.
func (p *progress) begin(now time.Time) {
	p.mu.Lock()
	p.next = now.Add(p.every)
	p.mu.Unlock()
}

func (p *progress) report(done, total int64) {
	total = max(total, 0)
	done = max(done, 0)
	if total > 0 && done > total {
		done = total
	}
	p.mu.Lock()
	p.done, p.total = done, total
	p.reported, p.dirty = true, true
	if p.write != nil && p.timer == nil && !p.writing && !p.ended {
		p.timer = time.AfterFunc(time.Until(p.next), p.fire)
	}
	p.mu.Unlock()
}

// fire is the timer's: it writes the latest report, then arms the timer
// again if a report came meanwhile.
func (p *progress) fire() {
	p.mu.Lock()
	if p.ended {
		// finish stopped the timer too late: the last write is its.
		p.mu.Unlock()
		return
	}
	p.timer = nil
	p.writing, p.dirty = true, false
	p.n++
	d, t, n := p.done, p.total, p.n
	p.mu.Unlock()

	start := time.Now()
	p.write(d, t, n, false)

	p.mu.Lock()
	p.writing, p.written = false, true
	p.wroteD, p.wroteT = d, t
	p.next = start.Add(p.every)
	if p.dirty && !p.ended {
		p.timer = time.AfterFunc(time.Until(p.next), p.fire)
	}
	p.idle.Broadcast()
	p.mu.Unlock()
}

// finish runs when the handler returned (succeeded or not; lost: its lease
// is gone, so nothing more is written): it stops the timer, waits for a
// write in flight, and writes the last report if anything was written or a
// write was due by now (done as total when the handler succeeded and total
// is above 0), unless that write would repeat the last one. A group's
// member that succeeded with a total above 0 before any write was due
// writes that total, done in full, to its group's hash only: the group's
// sums count it, and the task's own hash stays unwritten as a short task's
// does outside a group.
func (p *progress) finish(now time.Time, succeeded, lost bool) {
	p.mu.Lock()
	p.ended = true
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	for p.writing {
		p.idle.Wait()
	}
	due := p.written || p.reported && !now.Before(p.next)
	if !due && !lost && succeeded && p.total > 0 && p.writeGroup != nil {
		p.n++
		t, n := p.total, p.n
		p.mu.Unlock()
		p.writeGroup(t, t, n)
		return
	}
	if p.write == nil || !due || lost {
		p.mu.Unlock()
		return
	}
	d, t := p.done, p.total
	if succeeded && t > 0 {
		d = t
	}
	if p.written && d == p.wroteD && t == p.wroteT {
		p.mu.Unlock()
		return
	}
	p.n++
	n := p.n
	p.mu.Unlock()
	p.write(d, t, n, true)
}

// write records one report: in the task's hash, then in its group's. A
// failure is logged (at debug level while the handler runs, where the next
// write makes up for it; at warn level for the last), never returned.
func (s *progressSink) write(done, total, n int64, last bool) {
	ctx, cancel := context.WithTimeout(context.Background(), progressWriteTimeout)
	defer cancel()
	r := s.report
	r.Done, r.Total, r.N = done, total, n
	w := s.w
	level := slog.LevelDebug
	if last {
		level = slog.LevelWarn
	}
	if _, err := store.WriteProgress(ctx, w.rdb, s.q, s.key, r); err != nil {
		w.log.Log(ctx, level, "record a task's progress", slog.String("task", keys.TaskID(s.q.Name, s.key)), slog.Any("err", err))
		return
	}
	if s.group == "" {
		return
	}
	s.toGroup(ctx, r, level)
}

// writeGroup records a last report in the task's group's hash only (a
// short member's: see progress.finish). A failure is logged at warn level.
func (s *progressSink) writeGroup(done, total, n int64) {
	ctx, cancel := context.WithTimeout(context.Background(), progressWriteTimeout)
	defer cancel()
	r := s.report
	r.Done, r.Total, r.N = done, total, n
	s.toGroup(ctx, r, slog.LevelWarn)
}

// toGroup records r in the task's group's hash.
func (s *progressSink) toGroup(ctx context.Context, r store.ProgressReport, level slog.Level) {
	g, err := store.ParseGroupRef(s.group)
	if err != nil {
		return // checkEnvelope refused such an entry before it ran
	}
	if _, err := store.WriteGroupProgress(ctx, s.w.rdb, g, keys.TaskID(s.q.Name, s.key), r); err != nil {
		s.w.log.Log(ctx, level, "record a task's progress in its group", slog.String("task", keys.TaskID(s.q.Name, s.key)),
			slog.String("group", s.group), slog.Any("err", err))
	}
}

// jobProgress builds the reports' state of j's attempt, with its fence: the
// attempt, the delivery's ordinal among the attempt's deliveries (those
// that ended without an outcome, carried by the envelope, and this one),
// and the run's id (its entry and delivery: no other run has both).
func (w *Worker) jobProgress(j *job) *progress {
	return newProgress(&progressSink{
		w: w, q: j.q.keys, key: j.key, group: j.env.Group,
		report: store.ProgressReport{
			Attempt:  j.env.Attempt,
			Seq:      int64(j.env.Lost) + j.dlv,
			Run:      j.entry + "/" + strconv.FormatInt(j.dlv, 10),
			RetainMs: j.env.RetainMs,
		},
	})
}

// progressOf returns the reports' state of j's attempt (nil when its ctx
// carries none).
func progressOf(j *job) *progress {
	if t, ok := taskValueOf(j.ctx); ok {
		return t.pg
	}
	return nil
}
