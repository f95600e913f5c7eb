package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/codec"
)

var cmdEnqueue = &command{
	name: "enqueue", args: "QUEUE KIND", min: 0, max: 2,
	summary: "enqueue a task with JSON args (-args), or many from JSON lines on stdin (-stdin)",
	about: `With -stdin, each line of stdin is one task, a JSON object with the fields of
the flags: {"queue": "uploads", "kind": "upload", "args": {...}, "id": "a1",
"delay": "10m", "max_attempts": 3, "timeout": "30s", "deadline": "1h" or an
RFC 3339 time, "meta": {"k": "v"}, "rate_key": "...", "partition_key": "..."}.
QUEUE, KIND and the flags are the defaults of every line; a line's fields win
(its meta entries over theirs). Every line is read and checked before any task
is sent; then all are sent at once (EnqueueMany). Blank lines are skipped.
Without -stdin, QUEUE and KIND are required.`,
	setup: func(e *cliEnv) func(context.Context, []string) error {
		var f enqueueFlags
		f.args = e.fs.String("args", "", "the task's args as one JSON `VALUE` (default null)")
		f.id = e.fs.String("id", "", "the task's `ID`, making the enqueue idempotent")
		f.delay = e.fs.Duration("delay", 0, "run after this `DURATION`")
		f.maxAttempts = e.fs.Int("max-attempts", 0, "`N` attempts before it goes dead (default: the client's, 25)")
		f.timeout = e.fs.Duration("timeout", 0, "bound each attempt to `DURATION`")
		f.deadline = e.fs.String("deadline", "", "end the task if it has not succeeded by `TIME` (RFC 3339, or a duration from now)")
		f.meta = metaFlag{}
		e.fs.Var(f.meta, "meta", "metadata `k=v` for the handler (repeatable)")
		f.rateKey = e.fs.String("rate-key", "", "throttle under the rate of `KEY`")
		f.partitionKey = e.fs.String("partition-key", "", "run one at a time, in order, with the tasks of `KEY`")
		stdin := e.fs.Bool("stdin", false, "enqueue the tasks of stdin's JSON lines (below)")
		return func(ctx context.Context, pos []string) error {
			def := taskLine{Meta: map[string]string(f.meta), ID: *f.id, RateKey: *f.rateKey, PartitionKey: *f.partitionKey}
			if len(pos) > 0 {
				def.Queue = pos[0]
			}
			if len(pos) > 1 {
				def.Kind = pos[1]
			}
			if *f.maxAttempts < 0 {
				return usage("-max-attempts %d: want a positive number", *f.maxAttempts)
			}
			def.MaxAttempts = *f.maxAttempts
			if *f.delay != 0 {
				def.Delay = f.delay.String()
			}
			if *f.timeout != 0 {
				def.Timeout = f.timeout.String()
			}
			def.Deadline = *f.deadline
			if *f.args != "" {
				def.Args = json.RawMessage(*f.args)
			}
			var lines []taskLine
			var nums []int
			if *stdin {
				if *f.id != "" {
					return usage("-id with -stdin: give each line its own id")
				}
				if *f.args != "" {
					return usage("-args with -stdin: give each line its own args")
				}
				var err error
				if lines, nums, err = readTaskLines(e.stdin, def); err != nil {
					return err
				}
				if len(lines) == 0 {
					return usage("no task on stdin")
				}
			} else {
				if len(pos) != 2 {
					return usage("worker enqueue takes QUEUE KIND (or -stdin)")
				}
				lines, nums = []taskLine{def}, []int{0}
			}
			now := time.Now()
			specs := make([]client.Spec, len(lines))
			for i, l := range lines {
				s, err := l.spec(now)
				if err != nil {
					return fmt.Errorf("%s%w", lineName(nums[i]), err)
				}
				specs[i] = s
			}
			c, err := e.client(ctx)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			hs, err := c.EnqueueMany(ctx, specs)
			if err != nil {
				// The client names a bad spec by its index: name its line.
				var n int
				if _, serr := fmt.Sscanf(err.Error(), "spec %d:", &n); serr == nil && n >= 0 && n < len(nums) {
					if inner := errors.Unwrap(err); inner != nil {
						return fmt.Errorf("%s%w", lineName(nums[n]), inner)
					}
				}
				return err
			}
			type row struct {
				ID        string `json:"id"`
				Duplicate bool   `json:"duplicate"`
			}
			rows := make([]row, len(hs))
			for i, h := range hs {
				rows[i] = row{ID: h.ID(), Duplicate: h.Duplicate()}
			}
			var v any = rows
			if !*stdin {
				v = rows[0]
			}
			return e.emit(v, func(w io.Writer) {
				for _, r := range rows {
					if r.Duplicate {
						fmt.Fprintf(w, "%s\tduplicate\n", r.ID)
					} else {
						fmt.Fprintf(w, "%s\n", r.ID)
					}
				}
			})
		}
	},
}

type enqueueFlags struct {
	args, id, deadline, rateKey, partitionKey *string
	delay, timeout                            *time.Duration
	maxAttempts                               *int
	meta                                      metaFlag
}

func lineName(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("stdin line %d: ", n)
}

// metaFlag is -meta k=v, repeatable.
type metaFlag map[string]string

func (m metaFlag) String() string {
	ps := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		ps = append(ps, k+"="+m[k])
	}
	return strings.Join(ps, ",")
}

func (m metaFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want k=v", v)
	}
	m[k] = val
	return nil
}

// taskLine is one task of enqueue: its flags, or a line of -stdin.
type taskLine struct {
	Queue        string            `json:"queue"`
	Kind         string            `json:"kind"`
	Args         json.RawMessage   `json:"args"`
	ID           string            `json:"id"`
	Delay        string            `json:"delay"`
	MaxAttempts  int               `json:"max_attempts"`
	Timeout      string            `json:"timeout"`
	Deadline     string            `json:"deadline"`
	Meta         map[string]string `json:"meta"`
	RateKey      string            `json:"rate_key"`
	PartitionKey string            `json:"partition_key"`
}

// readTaskLines reads JSON lines, each over the defaults def, and returns
// them with their line numbers.
func readTaskLines(r io.Reader, def taskLine) ([]taskLine, []int, error) {
	if r == nil {
		return nil, nil, usage("no stdin")
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 8<<20) // a task's args are at most 1 MiB by default
	var lines []taskLine
	var nums []int
	n := 0
	for sc.Scan() {
		n++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		l := def
		l.Meta = nil
		d := json.NewDecoder(bytes.NewReader(b))
		d.DisallowUnknownFields()
		if err := d.Decode(&l); err != nil {
			return nil, nil, fmt.Errorf("stdin line %d: %w", n, err)
		}
		if d.More() {
			return nil, nil, fmt.Errorf("stdin line %d: more than one JSON value", n)
		}
		if len(def.Meta) > 0 {
			m := make(map[string]string, len(def.Meta)+len(l.Meta))
			for k, v := range def.Meta {
				m[k] = v
			}
			for k, v := range l.Meta {
				m[k] = v
			}
			l.Meta = m
		}
		lines, nums = append(lines, l), append(nums, n)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("stdin line %d: %w", n+1, err)
	}
	return lines, nums, nil
}

// spec checks l and makes it a spec for the client (which checks names,
// sizes and the rest again, before anything is sent).
func (l taskLine) spec(now time.Time) (client.Spec, error) {
	if l.Queue == "" {
		return client.Spec{}, errors.New("no queue")
	}
	if l.Kind == "" {
		return client.Spec{}, errors.New("no kind")
	}
	args := jsonArgs{kind: l.Kind}
	if len(l.Args) > 0 {
		mp, err := decodeJSONArgs(l.Args)
		if err != nil {
			return client.Spec{}, err
		}
		args.Raw = mp
	}
	o := &client.EnqueueOpts{Queue: l.Queue, ID: l.ID, MaxAttempts: l.MaxAttempts, Meta: l.Meta,
		RateKey: l.RateKey, PartitionKey: l.PartitionKey}
	if l.MaxAttempts < 0 {
		return client.Spec{}, fmt.Errorf("max_attempts %d: want a positive number", l.MaxAttempts)
	}
	var err error
	if o.Delay, err = parseDuration("delay", l.Delay); err != nil {
		return client.Spec{}, err
	}
	if o.Timeout, err = parseDuration("timeout", l.Timeout); err != nil {
		return client.Spec{}, err
	}
	if l.Deadline != "" {
		if d, err := time.ParseDuration(l.Deadline); err == nil {
			if d <= 0 {
				return client.Spec{}, fmt.Errorf("deadline %q: want a time to come", l.Deadline)
			}
			o.Deadline = now.Add(d)
		} else if t, err := time.Parse(time.RFC3339Nano, l.Deadline); err == nil {
			o.Deadline = t
		} else {
			return client.Spec{}, fmt.Errorf("deadline %q: want an RFC 3339 time (2026-01-02T15:04:05Z) or a duration (10m)", l.Deadline)
		}
	}
	return client.Spec{Args: args, Opts: o}, nil
}

func parseDuration(name, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s %q: want a duration such as 30s", name, s)
	}
	return d, nil
}

// jsonArgs are args given as JSON, sent as the msgpack codec.FromJSON makes
// of them (the JSON rule, as the HTTP API reads args).
type jsonArgs struct {
	kind string
	codec.Raw
}

func (a jsonArgs) Kind() string { return a.kind }

// decodeJSONArgs turns JSON args into msgpack by the JSON rule; its errors
// name the place in the args that is wrong ("args.files[2].name").
func decodeJSONArgs(b []byte) (codec.Raw, error) {
	mp, err := codec.FromJSON(nil, b, 0)
	if err != nil {
		var je *codec.JSONError
		if errors.As(err, &je) {
			return nil, fmt.Errorf("%s: %s (at offset %d of args %.60q)", je.Field("args"), je.Msg, je.Offset, b)
		}
		return nil, fmt.Errorf("args %.60q: %w", b, err)
	}
	return mp, nil
}
