package codec

import (
	"reflect"
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
