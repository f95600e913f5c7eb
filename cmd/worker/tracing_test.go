package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
)

// OTEL_TRACES_EXPORTER=console installs a global provider whose spans are
// written as JSON once shut down; none and unset install nothing; any
// other value is refused.
func TestSetupTracing(t *testing.T) {
	before := otel.GetTracerProvider()
	t.Cleanup(func() { otel.SetTracerProvider(before) })
	for _, v := range []string{"", "none"} {
		shutdown, err := setupTracing(env(map[string]string{"OTEL_TRACES_EXPORTER": v}), nil)
		if err != nil || otel.GetTracerProvider() != before {
			t.Fatalf("%q: %v, provider replaced: %v; want nothing installed", v, err, otel.GetTracerProvider() != before)
		}
		if err := shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := setupTracing(env(map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}), nil); err == nil || !strings.Contains(err.Error(), "console or none") {
		t.Fatalf("zipkin: %v; want refused", err)
	}
	var out bytes.Buffer
	shutdown, err := setupTracing(env(map[string]string{"OTEL_TRACES_EXPORTER": "console"}), &out)
	if err != nil {
		t.Fatal(err)
	}
	_, span := otel.Tracer("test").Start(context.Background(), "hello", trace.WithSpanKind(trace.SpanKindConsumer))
	if !span.IsRecording() {
		t.Fatal("the span does not record")
	}
	span.End()
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	var got struct{ Name string }
	if err := json.NewDecoder(&out).Decode(&got); err != nil || got.Name != "hello" {
		t.Fatalf("console output %q: %v; want the span as JSON", out.String(), err)
	}
}
