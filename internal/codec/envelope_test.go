package codec

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	t.Parallel()
	for _, e := range []Envelope{
		{Kind: "k", Payload: []byte{0x80}, Attempt: 1, MaxAttempts: 25, RetainMs: 86400000},
		{Key: "id-1", Kind: "upload", Payload: make([]byte, 300), Attempt: 3, MaxAttempts: 5, TimeoutMs: -1, RetainMs: 1, Parked: 2, Lost: 9,
			DeadlineMs: 1795666000000, Meta: []string{"tenant", "a", "user", "b"}, TraceParent: "00-abc-def-01", TraceState: "x=1", Parent: "q/1-0", Prev: "q/2-0"},
		{Kind: "k", Prev: "q/1-1"},
		{Kind: "k", Group: "group:q/g1"},
		{Kind: "k", RateKey: "s3:b", RateN: 5, RatePerUs: 1000000, RateTurn: 1795666000000123},
		{Kind: "k", Partition: "user:42"},
		{Kind: "k", EnqueuedMs: 1795666000000},
		{Kind: "k", History: []Attempt{{Attempt: 1, StartedMs: 1795666000000, FinishedMs: 1795666000100, Error: "boom", Worker: "w-1"},
			{Attempt: 2, StartedMs: 1795666001000, FinishedMs: 1795666001200, Error: strings.Repeat("é", 40), Worker: "w-2"}}},
	} {
		b := AppendEnvelope([]byte("prefix"), &e)[6:]
		got, err := DecodeEnvelope(b)
		if err != nil {
			t.Fatalf("decode %+v: %v", e, err)
		}
		if len(e.Payload) == 0 {
			e.Payload = got.Payload[:0:0]
			if got.Payload == nil {
				e.Payload = nil
			}
		}
		if !reflect.DeepEqual(*got, e) {
			t.Fatalf("got %+v; want %+v", *got, e)
		}
	}
}

// TestEnvelopeHistoryBounds: AppendAttempt keeps the last MaxHistory
// attempts and cuts errors at a UTF-8 boundary; a history longer than
// MaxHistory does not decode; fields an attempt carries past the known ones
// (a newer writer) are skipped.
func TestEnvelopeHistoryBounds(t *testing.T) {
	t.Parallel()
	e := Envelope{Kind: "k", Attempt: 1, MaxAttempts: 30, RetainMs: 1}
	for i := 1; i <= 25; i++ {
		e.AppendAttempt(Attempt{Attempt: i, Error: strings.Repeat("é", MaxHistoryError), Worker: "w"})
	}
	if len(e.History) != MaxHistory || e.History[0].Attempt != 16 || e.History[MaxHistory-1].Attempt != 25 {
		t.Fatalf("history of %d attempts, first %d", len(e.History), e.History[0].Attempt)
	}
	if n := len(e.History[0].Error); n > MaxHistoryError || n < MaxHistoryError-1 || !strings.HasPrefix(strings.Repeat("é", MaxHistoryError), e.History[0].Error) {
		t.Fatalf("error kept as %d bytes", n)
	}
	got, err := DecodeEnvelope(AppendEnvelope(nil, &e))
	if err != nil || !reflect.DeepEqual(got.History, e.History) {
		t.Fatalf("decode: %v", err)
	}

	long := e
	long.History = append(append([]Attempt(nil), e.History...), Attempt{Attempt: 26})
	if _, err := DecodeEnvelope(AppendEnvelope(nil, &long)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a history of %d attempts decoded: %v", len(long.History), err)
	}

	// An attempt of six fields, the sixth a map, then a newer top-level field.
	one := Envelope{Kind: "k", History: []Attempt{{Attempt: 3, Error: "x", Worker: "w"}}}
	b := AppendEnvelope(nil, &one)
	tail := []byte{0x95, 0x03, 0x00, 0x00, 0xa1, 'x', 0xa1, 'w'}
	i := strings.LastIndex(string(b), string(tail))
	if i < 0 || i+len(tail) != len(b) {
		t.Fatalf("attempt encoding not found at the end of % x", b)
	}
	b = append(b[:i:i], 0x96, 0x03, 0x00, 0x00, 0xa1, 'x', 0xa1, 'w', 0x81, 0xa1, 'k', 0xcb, 0, 0, 0, 0, 0, 0, 0, 0)
	b = append(b, 0x07)
	if b[0] != 0xdc || b[1] != 0 || b[2] != envelopeAll {
		t.Fatalf("header % x", b[:3])
	}
	b[2] = envelopeAll + 1
	got, err = DecodeEnvelope(b)
	if err != nil {
		t.Fatalf("decode with extra fields: %v", err)
	}
	if len(got.History) != 1 || got.History[0] != one.History[0] {
		t.Fatalf("history %+v", got.History)
	}
}

// FuzzDecodeEnvelope: whatever the bytes, DecodeEnvelope returns an
// envelope or an error wrapping ErrMalformed, and never more history than
// MaxHistory.
func FuzzDecodeEnvelope(f *testing.F) {
	e := Envelope{Key: "k1", Kind: "k", Payload: []byte{0x80}, Attempt: 2, MaxAttempts: 3, RetainMs: 1, EnqueuedMs: 5, Meta: []string{"a", "b"}}
	e.AppendAttempt(Attempt{Attempt: 1, StartedMs: 1, FinishedMs: 2, Error: "e", Worker: "w"})
	f.Add(AppendEnvelope(nil, &e))
	f.Add(AppendEnvelope(nil, &Envelope{Kind: "k"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := DecodeEnvelope(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(got.History) > MaxHistory {
			t.Fatalf("history of %d attempts", len(got.History))
		}
	})
}
