package main

import (
	"context"
	"fmt"
	"io"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// setupTracing installs the OpenTelemetry tracer provider the standard
// environment asks for, as the global one (the worker's and its clients'
// default): OTEL_TRACES_EXPORTER=console writes each span to out as JSON
// (the SDK's stdout exporter, batched); none, or unset, installs nothing,
// and the library's spans cost next to nothing. The SDK reads the rest of
// the standard variables itself (OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER...). shutdown flushes the
// spans still buffered; call it once the worker stopped.
func setupTracing(getenv func(string) string, out io.Writer) (shutdown func(context.Context) error, err error) {
	none := func(context.Context) error { return nil }
	switch v := getenv("OTEL_TRACES_EXPORTER"); v {
	case "", "none":
		return none, nil
	case "console":
		exp, err := stdouttrace.New(stdouttrace.WithWriter(out))
		if err != nil {
			return none, fmt.Errorf("OTEL_TRACES_EXPORTER=console: %w", err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
		otel.SetTracerProvider(tp)
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
		return tp.Shutdown, nil
	default:
		return none, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: this build exports traces to console or none", v)
	}
}
