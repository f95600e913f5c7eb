package worker_test

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/worker"
)

type traceArgs struct {
	Child bool // enqueue a child from the handler
	Fail  bool
}

func (traceArgs) Kind() string { return "traced" }

// tracing is a client and a worker that record their spans in one
// in-memory exporter.
type tracing struct {
	b   *bundle
	c   *client.Client
	exp *tracetest.InMemoryExporter
	tp  *sdktrace.TracerProvider
}

func newTracing(t *testing.T, handler func(ctx context.Context, a traceArgs) (string, error)) *tracing {
	t.Helper()
	b := setup(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	c, err := client.New(context.Background(), b.env.RDB, &client.Config{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	b.worker(t, &worker.Config{TracerProvider: tp}, func(w *worker.Worker) { worker.Handle(w, handler) })
	return &tracing{b: b, c: c, exp: exp, tp: tp}
}

// span returns the one ended span that has the attribute k = v and name.
func (tr *tracing) span(t *testing.T, name string, k attribute.Key, v string) tracetest.SpanStub {
	t.Helper()
	var out []tracetest.SpanStub
	for _, s := range tr.exp.GetSpans() {
		if s.Name == name && attrOf(s, k).AsString() == v {
			out = append(out, s)
		}
	}
	if len(out) != 1 {
		t.Fatalf("%d spans %q with %s=%s; want 1 (all: %v)", len(out), name, k, v, names(tr.exp.GetSpans()))
	}
	return out[0]
}

func (tr *tracing) spans(name string, k attribute.Key, v string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range tr.exp.GetSpans() {
		if s.Name == name && attrOf(s, k).AsString() == v {
			out = append(out, s)
		}
	}
	return out
}

func names(ss tracetest.SpanStubs) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Name)
	}
	return out
}

func attrOf(s tracetest.SpanStub, k attribute.Key) attribute.Value {
	for _, a := range s.Attributes {
		if a.Key == k {
			return a.Value
		}
	}
	return attribute.Value{}
}

func wantAttrs(t *testing.T, s tracetest.SpanStub, want map[attribute.Key]attribute.Value) {
	t.Helper()
	for k, v := range want {
		if got := attrOf(s, k); got != v {
			t.Fatalf("span %q: %s = %v; want %v (all: %v)", s.Name, k, got.Emit(), v.Emit(), s.Attributes)
		}
	}
}

// linksTo reports whether s links to sc.
func linksTo(s tracetest.SpanStub, sc trace.SpanContext) bool {
	for _, l := range s.Links {
		if l.SpanContext.TraceID() == sc.TraceID() && l.SpanContext.SpanID() == sc.SpanID() {
			return true
		}
	}
	return false
}

// An enqueue is a producer span, child of the caller's span; the attempt
// that runs the task is a consumer span, child of the producer's and
// linked to it; a task the handler enqueues continues the chain: its
// producer span is a child of the handler's consumer span. Each carries
// the messaging attributes; the handler sees the producer's context.
func TestSpansLinkProducerToConsumer(t *testing.T) {
	t.Parallel()
	children := make(chan *client.Handle, 1)
	seen := make(chan string, 2)
	var tr *tracing
	tr = newTracing(t, func(ctx context.Context, a traceArgs) (string, error) {
		tp, _ := worker.TraceContext(ctx)
		seen <- tp
		if a.Child {
			h, err := tr.c.Enqueue(ctx, traceArgs{}, &client.EnqueueOpts{Queue: tr.b.queue})
			if err != nil {
				return "", err
			}
			children <- h
		}
		return "ok", nil
	})
	ctx := ctxT(t)
	rctx, root := tr.tp.Tracer("test").Start(ctx, "request")
	parent, err := tr.c.Enqueue(rctx, traceArgs{Child: true}, &client.EnqueueOpts{Queue: tr.b.queue})
	if err != nil {
		t.Fatal(err)
	}
	root.End()
	if _, err := parent.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	child := <-children
	if _, err := child.Outcome(ctx); err != nil {
		t.Fatal(err)
	}
	q := tr.b.queue
	msgID := attribute.Key("messaging.message.id")
	sendP := tr.span(t, "send "+q, msgID, parent.ID())
	procP := tr.span(t, "process "+q, msgID, parent.ID())
	sendC := tr.span(t, "send "+q, msgID, child.ID())
	procC := tr.span(t, "process "+q, msgID, child.ID())

	rootSC := root.SpanContext()
	for _, s := range []tracetest.SpanStub{sendP, procP, sendC, procC} {
		if s.SpanContext.TraceID() != rootSC.TraceID() {
			t.Fatalf("span %q in trace %s; want the request's %s", s.Name, s.SpanContext.TraceID(), rootSC.TraceID())
		}
	}
	chain := []struct {
		s      tracetest.SpanStub
		kind   trace.SpanKind
		parent trace.SpanContext
	}{
		{sendP, trace.SpanKindProducer, rootSC},
		{procP, trace.SpanKindConsumer, sendP.SpanContext},
		{sendC, trace.SpanKindProducer, procP.SpanContext},
		{procC, trace.SpanKindConsumer, sendC.SpanContext},
	}
	for i, c := range chain {
		if c.s.SpanKind != c.kind || c.s.Parent.SpanID() != c.parent.SpanID() {
			t.Fatalf("span %d (%q): kind %v, parent %s; want %v, parent %s", i, c.s.Name, c.s.SpanKind, c.s.Parent.SpanID(), c.kind, c.parent.SpanID())
		}
		if c.kind == trace.SpanKindConsumer && !linksTo(c.s, c.parent) {
			t.Fatalf("consumer span %d links %v; want a link to its producer %s", i, c.s.Links, c.parent.SpanID())
		}
		if c.s.Status.Code != codes.Unset {
			t.Fatalf("span %d status %v; want unset (no error)", i, c.s.Status)
		}
	}
	wantAttrs(t, sendP, map[attribute.Key]attribute.Value{
		"messaging.system":           attribute.StringValue("async"),
		"messaging.operation.type":   attribute.StringValue("send"),
		"messaging.operation.name":   attribute.StringValue("send"),
		"messaging.destination.name": attribute.StringValue(q),
	})
	wantAttrs(t, procP, map[attribute.Key]attribute.Value{
		"messaging.system":           attribute.StringValue("async"),
		"messaging.operation.type":   attribute.StringValue("process"),
		"messaging.operation.name":   attribute.StringValue("process"),
		"messaging.destination.name": attribute.StringValue(q),
		"async.task.kind":            attribute.StringValue("traced"),
		"async.task.attempt":         attribute.IntValue(1),
	})
	// The handlers saw their producers' contexts.
	for _, s := range []tracetest.SpanStub{sendP, sendC} {
		want := "00-" + s.SpanContext.TraceID().String() + "-" + s.SpanContext.SpanID().String() + "-01"
		if got := <-seen; got != want {
			t.Fatalf("handler saw traceparent %q; want its producer's %q", got, want)
		}
	}
}

// Each failed attempt's consumer span records the error and has an error
// status; every attempt is a child of the one producer span. EnqueueMany
// is one producer span over its tasks.
func TestSpansOfFailuresAndBatches(t *testing.T) {
	t.Parallel()
	tr := newTracing(t, func(ctx context.Context, a traceArgs) (string, error) {
		if a.Fail {
			return "", errors.New("kaput")
		}
		return "ok", nil
	})
	ctx := ctxT(t)
	h, err := tr.c.Enqueue(ctx, traceArgs{Fail: true}, &client.EnqueueOpts{Queue: tr.b.queue, MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Outcome(ctx); !errors.Is(err, client.ErrDead) {
		t.Fatalf("got %v; want dead", err)
	}
	q := tr.b.queue
	msgID := attribute.Key("messaging.message.id")
	send := tr.span(t, "send "+q, msgID, h.ID())
	if send.Parent.IsValid() {
		t.Fatalf("producer span of an enqueue outside any trace has parent %v; want a root", send.Parent)
	}
	procs := tr.spans("process "+q, msgID, h.ID())
	if len(procs) != 2 {
		t.Fatalf("%d consumer spans; want one per attempt (2)", len(procs))
	}
	for i, p := range procs {
		if p.Parent.SpanID() != send.SpanContext.SpanID() || !linksTo(p, send.SpanContext) {
			t.Fatalf("attempt %d: parent %s, links %v; want child of and linked to %s", i+1, p.Parent.SpanID(), p.Links, send.SpanContext.SpanID())
		}
		if p.Status.Code != codes.Error || p.Status.Description != "kaput" || attrOf(p, "async.task.attempt").AsInt64() != int64(i+1) {
			t.Fatalf("attempt %d: status %v, attempt %v; want error kaput", i+1, p.Status, attrOf(p, "async.task.attempt").Emit())
		}
		if len(p.Events) != 1 || p.Events[0].Name != "exception" {
			t.Fatalf("attempt %d: events %v; want the error recorded", i+1, p.Events)
		}
	}

	hs, err := tr.c.EnqueueMany(ctx, []client.Spec{{Args: traceArgs{}, Opts: &client.EnqueueOpts{Queue: q}}, {Args: traceArgs{}, Opts: &client.EnqueueOpts{Queue: q}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if _, err := h.Outcome(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var batches []tracetest.SpanStub
	for _, s := range tr.exp.GetSpans() {
		if s.Name == "send "+q && attrOf(s, "messaging.batch.message_count").Type() == attribute.INT64 {
			batches = append(batches, s)
		}
	}
	if len(batches) != 1 {
		t.Fatalf("%d producer spans with a message count; want EnqueueMany's one", len(batches))
	}
	batch := batches[0]
	if n := attrOf(batch, "messaging.batch.message_count").AsInt64(); n != 2 || attrOf(batch, msgID).Type() != attribute.INVALID {
		t.Fatalf("EnqueueMany's span: message count %d, message id %v; want 2 and none", n, attrOf(batch, msgID).Emit())
	}
	for _, h := range hs {
		p := tr.span(t, "process "+q, msgID, h.ID())
		if p.Parent.SpanID() != batch.SpanContext.SpanID() || !linksTo(p, batch.SpanContext) {
			t.Fatalf("%s: consumer span's parent %s; want EnqueueMany's span %s", h.ID(), p.Parent.SpanID(), batch.SpanContext.SpanID())
		}
	}
}
