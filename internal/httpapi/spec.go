package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/ratelimit"
)

// taskArgs are a task's args as the API took them: the msgpack that
// codec.FromJSON made of their JSON, which the client sends as is
// (codec.Raw; empty for a task without args, sent as nil), and the task's
// kind.
type taskArgs struct {
	codec.Raw
	kind string
}

// Kind returns the task's kind.
func (a *taskArgs) Kind() string { return a.kind }

// Bounds of a task's metadata: the client's (client.EnqueueOpts.Meta).
// TestMetaBoundsAreTheClients checks that the client refuses what is past
// them.
const (
	maxMetaEntries = 64
	maxMetaKey     = 128
	maxMetaValue   = 4096
)

// spec checks one TaskObject and makes it the client.Spec of its task, by
// the client's rules: a bad one is a 400 (413 for args over
// Config.MaxPayloadBytes) naming its field under the prefix field ("" for
// the body of a single task, "tasks[3]" in a batch). queue is the task's
// queue (the path's, or a group's): a TaskObject naming another one is
// refused; with queue "" the TaskObject's own is taken, and required.
// Durations (delay, deadline) count from now.
func (s *server) spec(field, queue string, t *TaskObject, now time.Time) (client.Spec, *apiError) {
	bad := func(name, format string, a ...any) (client.Spec, *apiError) {
		return client.Spec{}, &apiError{Status: http.StatusBadRequest, Msg: fmt.Sprintf(format, a...), Field: join(field, name)}
	}
	switch {
	case t.Queue == "" && queue == "":
		return bad("queue", "queue is required")
	case t.Queue == "":
	case queue == "":
		queue = t.Queue
	case t.Queue != queue:
		return bad("queue", "the task names queue %s, but goes to queue %s (leave its \"queue\" out)", quote(t.Queue), quote(queue))
	}
	if keys.ValidateName("queue", queue) != nil {
		return bad("queue", "queue %s: %s", quote(queue), nameRule)
	}
	if dotName(queue) {
		return bad("queue", "queue %s: %s", quote(queue), dotRule)
	}
	if t.Kind == "" {
		return bad("kind", "kind is required")
	}
	if keys.ValidateName("kind", t.Kind) != nil {
		return bad("kind", "kind %s: %s", quote(t.Kind), nameRule)
	}
	o := &client.EnqueueOpts{Queue: queue, ID: t.ID, MaxAttempts: t.MaxAttempts, Meta: t.Meta, RateKey: t.RateKey, PartitionKey: t.PartitionKey}
	if t.ID != "" {
		switch {
		case keys.ValidateName("task id", t.ID) != nil:
			return bad("id", "id %s: %s", quote(t.ID), nameRule)
		case dotName(t.ID):
			return bad("id", "id %s: %s", quote(t.ID), dotRule)
		case keys.IsEntryID(t.ID):
			return bad("id", "id %s has the shape of a generated id (digits-digits); choose another", quote(t.ID))
		case strings.HasPrefix(t.ID, keys.BatchKeyPrefix):
			return bad("id", "id %s starts with %q, which names batches; choose another", quote(t.ID), keys.BatchKeyPrefix)
		}
	}
	if t.MaxAttempts < 0 {
		return bad("max_attempts", "max_attempts is %d; want 0 (the default) or more", t.MaxAttempts)
	}
	var err error
	if t.Delay != "" {
		if o.Delay, err = time.ParseDuration(t.Delay); err != nil || o.Delay < 0 {
			return bad("delay", "delay %s: want a duration of 0 or more, such as \"10s\" or \"1h30m\"", quote(t.Delay))
		}
	}
	if t.ProcessAt != "" {
		if t.Delay != "" {
			return bad("process_at", "process_at and delay are both set; set one")
		}
		if o.ProcessAt, err = time.Parse(time.RFC3339Nano, t.ProcessAt); err != nil {
			return bad("process_at", "process_at %s: want an RFC 3339 time, such as \"2026-01-02T15:04:05Z\"", quote(t.ProcessAt))
		}
	}
	if t.Timeout != "" {
		if o.Timeout, err = time.ParseDuration(t.Timeout); err != nil || o.Timeout < 0 || o.Timeout > 0 && o.Timeout < time.Millisecond {
			return bad("timeout", "timeout %s: want 0 (none) or a duration of at least 1ms, such as \"30s\"", quote(t.Timeout))
		}
	}
	if t.Retention != "" {
		if o.Retention, err = time.ParseDuration(t.Retention); err != nil || o.Retention < time.Millisecond {
			return bad("retention", "retention %s: want a duration of at least 1ms, such as \"24h\"", quote(t.Retention))
		}
	}
	if t.Deadline != "" {
		if d, err := time.ParseDuration(t.Deadline); err == nil {
			if d <= 0 {
				return bad("deadline", "deadline %s: a duration from now must be positive", quote(t.Deadline))
			}
			o.Deadline = now.Add(d)
		} else if o.Deadline, err = time.Parse(time.RFC3339Nano, t.Deadline); err != nil {
			return bad("deadline", "deadline %s: want an RFC 3339 time or a duration from now, such as \"2026-01-02T15:04:05Z\" or \"1h\"", quote(t.Deadline))
		}
	}
	if len(t.Meta) > maxMetaEntries {
		return bad("meta", "meta has %d entries; the limit is %d", len(t.Meta), maxMetaEntries)
	}
	for k, v := range t.Meta {
		if k == "" || len(k) > maxMetaKey || len(v) > maxMetaValue {
			return bad("meta", "meta entry %s: keys must be 1 to %d bytes, values at most %d", quote(k), maxMetaKey, maxMetaValue)
		}
	}
	if t.RateKey != "" && ratelimit.ValidateKey(t.RateKey) != nil {
		return bad("rate_key", "rate_key %s: %s", quote(t.RateKey), keyRule)
	}
	if t.PartitionKey != "" {
		switch {
		case keys.ValidatePartitionKey(t.PartitionKey) != nil:
			return bad("partition_key", "partition_key %s: %s", quote(t.PartitionKey), keyRule)
		case t.Delay != "" || t.ProcessAt != "":
			return bad("partition_key", "partition_key with delay or process_at: a partitioned task starts when the tasks of its key before it ended")
		}
	}
	a := &taskArgs{kind: t.Kind}
	if len(t.Args) > 0 {
		mp, err := codec.FromJSON(nil, t.Args, 0)
		if err != nil {
			var je *codec.JSONError
			if errors.As(err, &je) {
				return client.Spec{}, &apiError{Status: http.StatusBadRequest, Msg: clip(je.Msg, 200), Field: join(field, clip(je.Field("args"), 100))}
			}
			return client.Spec{}, &apiError{Status: http.StatusBadRequest, Msg: clip(err.Error(), 200), Field: join(field, "args")}
		}
		a.Raw = mp
	}
	if len(a.Raw) > s.cfg.MaxPayloadBytes {
		return client.Spec{}, &apiError{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("args encode to %d bytes of msgpack; the limit is %d", len(a.Raw), s.cfg.MaxPayloadBytes), Field: join(field, "args")}
	}
	return client.Spec{Args: a, Opts: o}, nil
}

// dotName reports whether name is "." or "..": a queue, a task's key or a
// group's id the API refuses, since in a path (/v1/queues/../tasks,
// /v1/tasks/uploads/..) it reads as a step up, and a client or proxy may
// clean it away.
func dotName(name string) bool { return name == "." || name == ".." }

// The rules of names and keys, as errors state them.
const (
	dotRule  = "\".\" and \"..\" are not names here (in a path they are steps up)"
	nameRule = "want 1 to 128 bytes of A-Z a-z 0-9 . _ -"
	keyRule  = "want 1 to 256 bytes of A-Z a-z 0-9 . _ - : /"
)
