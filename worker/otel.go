package worker

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/taskfleet/async/internal/engine"
)

// Attributes of the consumer spans beyond the messaging conventions'.
const (
	attrKind    = attribute.Key("async.task.kind")
	attrAttempt = attribute.Key("async.task.attempt")
)

// startProcess starts the consumer span of j's attempt ("process <queue>"):
// a child of the trace context the task carries (the producer span of its
// enqueue, when one recorded), linked to it. The returned ctx carries the
// span, so that the tasks the handler enqueues continue its trace.
func (w *Worker) startProcess(ctx context.Context, j *job) (context.Context, trace.Span) {
	tr, ok := w.tracers.Get()
	if !ok {
		return ctx, nil // no SDK: the task's context passes on as it came
	}
	pctx := ctx
	var link trace.Link
	if j.env.TraceParent != "" {
		if sc, ok := engine.ParseTraceParent(j.env.TraceParent, j.env.TraceState); ok {
			pctx = trace.ContextWithRemoteSpanContext(ctx, sc)
			link = trace.Link{SpanContext: sc}
		}
	}
	var sctx context.Context
	var span trace.Span
	if link.SpanContext.IsValid() {
		sctx, span = tr.Start(pctx, "process", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(link))
	} else {
		sctx, span = tr.Start(pctx, "process", trace.WithSpanKind(trace.SpanKindConsumer))
	}
	if span.IsRecording() {
		t := j.task()
		span.SetName("process " + t.Queue)
		span.SetAttributes(
			semconv.MessagingSystemKey.String(engine.MessagingSystem),
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName("process"),
			semconv.MessagingDestinationName(t.Queue),
			semconv.MessagingMessageID(t.ID),
			attrKind.String(t.Kind),
			attrAttempt.Int(t.Attempt),
		)
	}
	return sctx, span
}

// endProcess ends the consumer span of an attempt whose handler returned
// err, recording it as the span's error; span nil is none.
func endProcess(span trace.Span, err error) {
	if span == nil {
		return
	}
	if err != nil && !errors.Is(err, errRecorded) && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
