package engine

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// With no provider configured, the library starts no span while the global
// provider is otel's own (no SDK installed), and uses the global one as
// soon as an SDK is installed; a configured provider is always used.
func TestTracersFollowTheGlobalProvider(t *testing.T) {
	if otel.GetTracerProvider() != startProvider {
		t.Skip("an SDK is installed globally in this test binary")
	}
	tr := NewTracers(nil)
	if _, ok := tr.Get(); ok {
		t.Fatal("a tracer with no SDK installed; want none")
	}
	sdk := sdktrace.NewTracerProvider()
	defer func() { _ = sdk.Shutdown(context.Background()) }()
	otel.SetTracerProvider(sdk)
	defer otel.SetTracerProvider(startProvider)
	got, ok := tr.Get()
	if !ok {
		t.Fatal("no tracer once an SDK is installed")
	}
	if _, span := got.Start(context.Background(), "x"); !span.IsRecording() {
		t.Fatal("the tracer is not the SDK's")
	}
	otel.SetTracerProvider(startProvider)
	if _, ok := tr.Get(); ok {
		t.Fatal("a tracer after the global provider went back to otel's own")
	}
	fixed := NewTracers(sdk)
	if got, ok := fixed.Get(); !ok {
		t.Fatal("no tracer from a configured provider")
	} else if _, span := got.Start(context.Background(), "y"); !span.IsRecording() || span.SpanContext().TraceFlags()&trace.FlagsSampled == 0 {
		t.Fatal("the configured provider's span does not record")
	}
}

// A traceparent reads back as the span context it was written from.
func TestTraceParentRoundTrip(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	sc, ok := ParseTraceParent(tp, "vendor=1,other=x")
	if !ok || !sc.IsRemote() || !sc.IsSampled() || sc.TraceState().Get("vendor") != "1" {
		t.Fatalf("parsed %+v, %v", sc, ok)
	}
	if got := FormatTraceParent(sc); got != tp {
		t.Fatalf("formatted %q; want %q", got, tp)
	}
	for _, bad := range []string{"", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"} {
		if _, ok := ParseTraceParent(bad, ""); ok {
			t.Errorf("%q parsed; want refused", bad)
		}
	}
	if sc, ok := ParseTraceParent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", ""); !ok || sc.IsSampled() {
		t.Fatalf("unsampled: %+v, %v", sc, ok)
	}
}
