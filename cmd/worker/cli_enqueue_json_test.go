package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/testenv"
	"github.com/taskfleet/async/worker"
)

// Upload is a handler's args with the fields the JSON rule's markers and
// numbers reach.
type Upload struct {
	Path string    `msgpack:"path"`
	Size uint64    `msgpack:"size"`
	Data []byte    `msgpack:"data"`
	At   time.Time `msgpack:"at"`
}

func (Upload) Kind() string { return "cli.upload" }

// `worker enqueue` reads args by the JSON rule (codec.FromJSON), as the HTTP
// API does: the handler's struct gets the same values as from Go, and bad
// args are refused before anything is sent, naming the place in them.
func TestCLIEnqueueJSONRule(t *testing.T) {
	tg := cliTarget(t)
	queue := testenv.Queue(t)
	got := make(chan Upload, 1)
	testenv.StartWorker(t, tg.RDB, queue, nil, func(w *worker.Worker) {
		worker.Handle(w, func(ctx context.Context, a Upload) (int, error) {
			got <- a
			return 0, nil
		})
	}, false)

	tg.cmd(t, 0, "enqueue", queue, "cli.upload", "-args",
		`{"path": "/in/a", "size": 18446744073709551615, "data": {"$bytes": "AAEC/w=="}, "at": {"$time": "2026-01-02T16:04:05.5+01:00"}}`)
	want := Upload{Path: "/in/a", Size: 1<<64 - 1, Data: []byte{0, 1, 2, 0xff}, At: time.Date(2026, 1, 2, 15, 4, 5, 500_000_000, time.UTC)}
	select {
	case a := <-got:
		if a.Path != want.Path || a.Size != want.Size || !bytes.Equal(a.Data, want.Data) || !a.At.Equal(want.At) {
			t.Errorf("the handler got %+v; want %+v", a, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the task did not run")
	}

	for _, tc := range []struct{ args, want string }{
		{`{"path": "a", "path": "b"}`, `args.path: key "path" appears twice`},
		{`{"files": [{"data": {"$bytes": "AB=="}}]}`, "args.files[0].data: malformed $bytes marker"},
		{`[1, 2`, "args: unexpected end of input in an array"},
		{`not json`, "args: unexpected 'n', want a value (at offset 0"},
		{`{"s": "\ud800"}`, "args.s: \\ud800 is half of a UTF-16 surrogate pair"},
		{`{"n": 1e400}`, "args.n: number 1e400 is beyond the range of float64"},
	} {
		code, _, errs := tg.run(t, "", "enqueue", queue, "cli.upload", "-args", tc.args)
		if code != 1 || !strings.Contains(errs, tc.want) {
			t.Errorf("enqueue -args %s: exit %d, stderr %q; want 1 and %q", tc.args, code, errs, tc.want)
		}
	}
	code, _, errs := tg.run(t, `{"args": {"a": {"b": [{"$float": "nan"}]}}}`+"\n", "enqueue", "-stdin", queue, "cli.upload")
	if want := "stdin line 1: args.a.b[0]: malformed $float marker"; code != 1 || !strings.Contains(errs, want) {
		t.Errorf("enqueue -stdin of bad args: exit %d, stderr %q; want 1 and %q", code, errs, want)
	}
	deep := strings.Repeat("[", codec.DefaultMaxDepth+1) + strings.Repeat("]", codec.DefaultMaxDepth+1)
	if code, _, errs := tg.run(t, "", "enqueue", queue, "cli.upload", "-args", deep); code != 1 || !strings.Contains(errs, "more than the limit of 32") {
		t.Errorf("enqueue of args nested too deep: exit %d, stderr %q", code, errs)
	}
}
