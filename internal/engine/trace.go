package engine

import (
	"context"
	"reflect"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Tracing. An Enqueue or EnqueueMany call is one producer span ("send
// <queue>"), a child of the trace context the tasks would carry without it
// (see traceParentOf); its context is what the tasks' envelopes carry, as
// W3C traceparent and tracestate, and the worker's consumer span of each
// attempt is its child and links to it. Under the no-op tracer (no SDK
// installed) nothing is recorded and the envelopes carry what they did
// before: the options', the enqueuing ctx's span's, or the enqueuing
// handler's task's trace context.

// TracerName names the library's tracer.
const TracerName = "github.com/taskfleet/async"

// MessagingSystem is the messaging.system attribute of the library's spans.
const MessagingSystem = "async"

// Tracers picks the tracer of the library's spans: the configured
// provider's, else the global provider's, or none while the global
// provider is still the one otel starts with (no SDK installed), so that
// the spans cost nothing until one is; one installed later is picked up.
type Tracers struct {
	fixed trace.Tracer
	cur   atomic.Pointer[globalTracer]
}

type globalTracer struct {
	tp trace.TracerProvider
	t  trace.Tracer
}

// startProvider is the global provider otel starts with, nil if one was
// installed before this package's init.
var startProvider = func() trace.TracerProvider {
	tp := otel.GetTracerProvider()
	if reflect.TypeOf(tp).String() != "*global.tracerProvider" {
		return nil
	}
	return tp
}()

// NewTracers returns the Tracers of tp, or of the global provider when tp
// is nil.
func NewTracers(tp trace.TracerProvider) *Tracers {
	t := &Tracers{}
	if tp != nil {
		t.fixed = tp.Tracer(TracerName)
	}
	return t
}

// Get returns the tracer to start a span with; ok is false when there is
// none (no SDK installed).
func (t *Tracers) Get() (tr trace.Tracer, ok bool) {
	if t.fixed != nil {
		return t.fixed, true
	}
	tp := otel.GetTracerProvider()
	if tp == startProvider {
		return nil, false
	}
	g := t.cur.Load()
	if g == nil || g.tp != tp {
		g = &globalTracer{tp: tp, t: tp.Tracer(TracerName)}
		t.cur.Store(g)
	}
	return g.t, true
}

// FormatTraceParent returns sc as a W3C traceparent.
func FormatTraceParent(sc trace.SpanContext) string {
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sc.TraceFlags().String()
}

// ParseTraceParent reads a W3C traceparent and tracestate as a remote span
// context; ok is false when tp is empty or not valid (a tracestate that
// does not parse is left out).
func ParseTraceParent(tp, ts string) (trace.SpanContext, bool) {
	if !validTraceParent(tp) || tp[:2] == "ff" {
		return trace.SpanContext{}, false
	}
	tid, err := trace.TraceIDFromHex(tp[3:35])
	if err != nil {
		return trace.SpanContext{}, false
	}
	sid, err := trace.SpanIDFromHex(tp[36:52])
	if err != nil {
		return trace.SpanContext{}, false
	}
	var flags byte
	for _, c := range tp[53:55] {
		flags <<= 4
		switch {
		case c >= '0' && c <= '9':
			flags |= byte(c - '0')
		default:
			flags |= byte(c-'a') + 10
		}
	}
	cfg := trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.TraceFlags(flags) & trace.FlagsSampled, Remote: true}
	if ts != "" {
		if state, err := trace.ParseTraceState(ts); err == nil {
			cfg.TraceState = state
		}
	}
	sc := trace.NewSpanContext(cfg)
	return sc, sc.IsValid()
}

// taskTrace returns the trace context, as a W3C traceparent and
// tracestate, that a task prepared with ctx and opts carries: that of the
// call's producer span, when it records and continues the task's own
// parent; else the one the options set (or a hook: explicit); else that of
// the span ctx carries; else the inherited one (the handler's task's,
// which prepare put in opts).
func taskTrace(ctx context.Context, opts *Opts, explicit bool, send sendSpan) (string, string) {
	sc := send.sc
	if explicit && sc.IsValid() {
		// A spec of EnqueueMany may name a trace of its own: the call's
		// span continues the first spec's.
		if own, _ := ParseTraceParent(opts.TraceParent, opts.TraceState); own.TraceID() != send.parent.TraceID() || own.SpanID() != send.parent.SpanID() {
			return opts.TraceParent, opts.TraceState
		}
	}
	if !sc.IsValid() && !explicit {
		sc = trace.SpanContextFromContext(ctx)
	}
	if !sc.IsValid() {
		return opts.TraceParent, opts.TraceState
	}
	tp := FormatTraceParent(sc)
	if tp == opts.TraceParent {
		// The inherited context itself (a handler's span that does not
		// record): keep its tracestate as it came.
		return opts.TraceParent, opts.TraceState
	}
	ts := sc.TraceState().String()
	if len(ts) > maxTraceState {
		ts = ""
	}
	return tp, ts
}

// traceParentOf returns the span context a task enqueued with ctx and opts
// continues: the options' trace context, else the span ctx carries, else
// the trace context of the handler's task that enqueues it.
func traceParentOf(ctx context.Context, opts *Opts) trace.SpanContext {
	if opts != nil && opts.TraceParent != "" {
		sc, _ := ParseTraceParent(opts.TraceParent, opts.TraceState)
		return sc // an invalid one is refused by prepare
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return sc
	}
	if in, ok := TaskOf(ctx); ok && in.TraceParent != "" {
		sc, _ := ParseTraceParent(in.TraceParent, in.TraceState)
		return sc
	}
	return trace.SpanContext{}
}

// sendSpan is the producer span of one enqueue call.
type sendSpan struct {
	span   trace.Span
	sc     trace.SpanContext // the span's own context, when it is a new span
	parent trace.SpanContext // what it continues
}

// startSend starts the producer span of an enqueue call whose first task
// has opts. The returned ctx carries it. With no tracer it starts none.
func (e *Engine) startSend(ctx context.Context, opts *Opts) (context.Context, sendSpan) {
	if _, ok := e.tracers.Get(); !ok {
		return ctx, sendSpan{}
	}
	parent := traceParentOf(ctx, opts)
	pctx := ctx
	if parent.IsValid() && !parent.Equal(trace.SpanContextFromContext(ctx)) {
		pctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	}
	tr, ok := e.tracers.Get()
	if !ok {
		return ctx, sendSpan{}
	}
	sctx, span := tr.Start(pctx, "send", trace.WithSpanKind(trace.SpanKindProducer))
	s := sendSpan{span: span, parent: parent}
	if sc := span.SpanContext(); sc.IsValid() && sc.SpanID() != parent.SpanID() {
		s.sc = sc
		return sctx, s
	}
	return ctx, s
}

// records reports whether the span records: only then does end need its
// queues.
func (s sendSpan) records() bool { return s.span != nil && s.span.IsRecording() }

// end ends the span of a call that enqueued to queues (one per task, in
// order; nil when it failed before they were known), with err; ref is
// where its one task went, if it had one.
func (s sendSpan) end(queues []string, ref Ref, err error) {
	if s.span == nil {
		return
	}
	if s.span.IsRecording() {
		attrs := []attribute.KeyValue{
			semconv.MessagingSystemKey.String(MessagingSystem),
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("send"),
		}
		name := "send"
		if q, one := sameQueue(queues); one {
			attrs = append(attrs, semconv.MessagingDestinationName(q))
			name = "send " + q
		}
		if len(queues) == 1 && ref.Key != "" {
			attrs = append(attrs, semconv.MessagingMessageID(ref.ID()))
		}
		if len(queues) > 1 {
			attrs = append(attrs, semconv.MessagingBatchMessageCount(len(queues)))
		}
		s.span.SetName(name)
		s.span.SetAttributes(attrs...)
		if err != nil {
			s.span.RecordError(err)
			s.span.SetStatus(codes.Error, err.Error())
		}
	}
	s.span.End()
}

// sameQueue returns the queue all of qs name, if they name one.
func sameQueue(qs []string) (string, bool) {
	if len(qs) == 0 {
		return "", false
	}
	for _, q := range qs[1:] {
		if q != qs[0] {
			return "", false
		}
	}
	return qs[0], true
}
