package codec

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// gateMarshal encodes v with the upstream encoder, so the gate is tested
// against the bytes msgpack itself produces.
func gateMarshal(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		tb.Fatalf("msgpack.Marshal(%T): got error %v; want nil", v, err)
	}
	return b
}

// gateCat joins byte slices.
func gateCat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}

// gateNested returns depth fixarrays of one element each around a nil.
func gateNested(depth int) []byte {
	return append(bytes.Repeat([]byte{0x91}, depth), 0xc0)
}

// gateArray returns n nils, which msgpack encodes as an array of n elements.
func gateArray(n int) []any {
	return make([]any, n)
}

// gateMap builds a map with n distinct string keys.
func gateMap(n int) map[string]int {
	m := make(map[string]int, n)
	for i := range n {
		m[fmt.Sprintf("k%d", i)] = i
	}
	return m
}

type gateInner struct {
	Name  string            `msgpack:"name"`
	Score float64           `msgpack:"score"`
	Tags  []string          `msgpack:"tags"`
	Attrs map[string]string `msgpack:"attrs"`
}

type gateOuter struct {
	ID       int64       `msgpack:"id"`
	Inner    gateInner   `msgpack:"inner"`
	Children []gateInner `msgpack:"children"`
	Blob     []byte      `msgpack:"blob"`
	Ptr      *gateInner  `msgpack:"ptr"`
	At       time.Time   `msgpack:"at"`
}

type gateValidCase struct {
	name      string
	in        []byte
	wantFirst int // expected type byte, or -1 to skip the check
}

func gateValidCases(tb testing.TB) []gateValidCase {
	m := func(v any) []byte { return gateMarshal(tb, v) }
	return []gateValidCase{
		{"positive fixint", m(5), 0x05},
		{"positive fixint max", m(int8(127)), -1},
		{"negative fixint", m(-5), 0xfb},
		{"nil", m(nil), 0xc0},
		{"false", m(false), 0xc2},
		{"true", m(true), 0xc3},
		{"uint8", m(uint8(200)), 0xcc},
		{"uint16", m(uint16(60000)), 0xcd},
		{"uint32", m(uint32(4000000000)), 0xce},
		{"uint64", m(uint64(math.MaxUint64)), 0xcf},
		{"int8", m(int8(-100)), 0xd0},
		{"int16", m(int16(-30000)), 0xd1},
		{"int32", m(int32(math.MinInt32)), 0xd2},
		{"int64", m(int64(math.MinInt64)), 0xd3},
		{"int", m(math.MaxInt64), -1},
		{"float32", m(float32(1.5)), 0xca},
		{"float64", m(math.Pi), 0xcb},
		{"float64 nan", m(math.NaN()), 0xcb},
		{"fixstr empty", m(""), 0xa0},
		{"fixstr 31", m(strings.Repeat("a", 31)), 0xbf},
		{"str8 32", m(strings.Repeat("b", 32)), 0xd9},
		{"str8 255", m(strings.Repeat("c", 255)), 0xd9},
		{"str16 256", m(strings.Repeat("d", 256)), 0xda},
		{"str32 65536", m(strings.Repeat("e", 65536)), 0xdb},
		{"bin8 empty", m([]byte{}), 0xc4},
		{"bin8", m([]byte("hello")), 0xc4},
		{"bin16", m(bytes.Repeat([]byte{1}, 300)), 0xc5},
		{"bin32", m(bytes.Repeat([]byte{2}, 70000)), 0xc6},
		{"time fixext4", m(time.Unix(1700000000, 0)), 0xd6},
		{"time fixext8", m(time.Unix(1700000000, 123456789)), 0xd7},
		{"time ext8", m(time.Unix(1<<40, 5)), 0xc7},
		{"fixext1", []byte{0xd4, 0x05, 0x01}, 0xd4},
		{"fixext2", []byte{0xd5, 0x05, 0x01, 0x02}, 0xd5},
		{"fixext16", gateCat([]byte{0xd8, 0x05}, make([]byte, 16)), 0xd8},
		{"ext8 empty", []byte{0xc7, 0x00, 0x05}, 0xc7},
		{"ext16", gateCat([]byte{0xc8, 0x01, 0x00, 0x05}, make([]byte, 256)), 0xc8},
		{"ext32", gateCat([]byte{0xc9, 0x00, 0x01, 0x00, 0x00, 0x05}, make([]byte, 65536)), 0xc9},
		{"fixarray empty", m([]any{}), 0x90},
		{"fixarray", m([]any{1, "a", nil, true}), 0x94},
		{"array16", m(gateArray(20)), 0xdc},
		{"array32", m(gateArray(70000)), 0xdd},
		{"array16 empty", []byte{0xdc, 0x00, 0x00}, 0xdc},
		{"array32 empty", []byte{0xdd, 0x00, 0x00, 0x00, 0x00}, 0xdd},
		{"fixmap empty", m(map[string]any{}), 0x80},
		{"fixmap", m(map[string]any{"a": 1, "b": []any{1, 2}}), 0x82},
		{"map16", m(gateMap(20)), 0xde},
		{"map32", m(gateMap(70000)), 0xdf},
		{"map16 empty", []byte{0xde, 0x00, 0x00}, 0xde},
		{"map32 empty", []byte{0xdf, 0x00, 0x00, 0x00, 0x00}, 0xdf},
		{"nested struct", m(gateOuter{
			ID:       42,
			Inner:    gateInner{Name: "x", Score: 0.5, Tags: []string{"a", "b"}, Attrs: map[string]string{"k": "v"}},
			Children: []gateInner{{Name: "c1"}, {Name: "c2", Tags: []string{}}},
			Blob:     []byte{0, 1, 2},
			At:       time.Unix(1700000000, 1),
		}), -1},
		{"empty containers closing together", []byte{0x92, 0x91, 0x90, 0x80}, 0x92},
		{"depth 32", gateNested(DefaultMaxDepth), 0x91},
		{"depth 32 empty innermost", append(bytes.Repeat([]byte{0x91}, DefaultMaxDepth-1), 0x90), 0x91},
	}
}

func TestCheckAcceptsValid(t *testing.T) {
	t.Parallel()
	for _, tc := range gateValidCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.wantFirst >= 0 && int(tc.in[0]) != tc.wantFirst {
				t.Fatalf("encoding starts with %#02x; want %#02x (test does not cover the intended format)", tc.in[0], tc.wantFirst)
			}
			if err := Check(tc.in, DefaultMaxDepth); err != nil {
				t.Fatalf("Check: got %v; want nil", err)
			}
		})
	}
}

// TestCheckRejectsPrefixesAndSuffixes relies on msgpack being prefix-free:
// no strict prefix of a valid encoding is itself a valid encoding, and a
// valid encoding followed by anything has trailing bytes.
func TestCheckRejectsPrefixesAndSuffixes(t *testing.T) {
	t.Parallel()
	for _, tc := range gateValidCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var cuts []int
			if len(tc.in) <= 4096 {
				for i := range len(tc.in) {
					cuts = append(cuts, i)
				}
			} else {
				for i := range 12 {
					cuts = append(cuts, i)
				}
				cuts = append(cuts, len(tc.in)/2, len(tc.in)-2, len(tc.in)-1)
			}
			for _, n := range cuts {
				err := Check(tc.in[:n], DefaultMaxDepth)
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("Check(first %d of %d bytes): got %v; want ErrMalformed", n, len(tc.in), err)
				}
			}
			for _, extra := range [][]byte{{0x00}, {0xc0}, {0xc1}, {0x91, 0xc0}} {
				err := Check(gateCat(tc.in, extra), DefaultMaxDepth)
				if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "trailing") {
					t.Fatalf("Check(value + % x): got %v; want trailing-bytes ErrMalformed", extra, err)
				}
			}
		})
	}
}

func TestCheckRejectsMalformed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       []byte
		maxDepth int
		want     string // substring of the error message
	}{
		{"empty", nil, DefaultMaxDepth, "empty input"},
		{"empty non-nil", []byte{}, DefaultMaxDepth, "empty input"},
		{"array32 huge", []byte{0xdd, 0xff, 0xff, 0xff, 0xff}, DefaultMaxDepth, "array at offset 0 declares 4294967295 elements but 0 bytes remain"},
		{"map32 huge", []byte{0xdf, 0xff, 0xff, 0xff, 0xff}, DefaultMaxDepth, "map at offset 0 declares 4294967295 pairs but 0 bytes remain"},
		{"str32 huge", []byte{0xdb, 0xff, 0xff, 0xff, 0xff}, DefaultMaxDepth, "str32 at offset 0 declares 4294967295 bytes"},
		{"bin32 huge", []byte{0xc6, 0xff, 0xff, 0xff, 0xff}, DefaultMaxDepth, "bin32 at offset 0 declares 4294967295 bytes"},
		{"ext32 huge", []byte{0xc9, 0xff, 0xff, 0xff, 0xff, 0x01}, DefaultMaxDepth, "ext32 at offset 0 declares 4294967295 bytes"},
		{"array16 one short", []byte{0xdc, 0x00, 0x03, 0xc0, 0xc0}, DefaultMaxDepth, "declares 3 elements but 2 bytes remain"},
		{"map needs two bytes per pair", []byte{0x82, 0xa1, 'a', 0x01}, DefaultMaxDepth, "map at offset 0 declares 2 pairs but 3 bytes remain"},
		{"map16 huge", []byte{0xde, 0xff, 0xff, 0xc0}, DefaultMaxDepth, "declares 65535 pairs"},
		{"nested huge array", gateCat([]byte{0x92, 0xaa}, []byte("0123456789"), []byte{0xdd, 0xff, 0xff, 0xff, 0xff, 1, 2, 3}), DefaultMaxDepth,
			"array at offset 12 declares 4294967295 elements but 3 bytes remain"},
		{"deep nesting", gateNested(100000), DefaultMaxDepth, "array at offset 32 is nested 33 deep"},
		{"deep nesting of maps", append(bytes.Repeat([]byte{0x81, 0xc0}, 100), 0xc0), DefaultMaxDepth, "map at offset 64 is nested 33 deep"},
		{"depth 33", gateNested(DefaultMaxDepth + 1), DefaultMaxDepth, "nested 33 deep"},
		{"empty array beyond depth", append(bytes.Repeat([]byte{0x91}, DefaultMaxDepth), 0x90), DefaultMaxDepth, "nested 33 deep"},
		{"container at depth 0", []byte{0x90}, 0, "nested 1 deep, more than the limit of 0"},
		{"negative max depth", []byte{0x90}, -1, "limit of 0"},
		{"reserved 0xc1", []byte{0xc1}, DefaultMaxDepth, "reserved type byte 0xc1 at offset 0"},
		{"reserved 0xc1 inside array", []byte{0x92, 0x01, 0xc1}, DefaultMaxDepth, "offset 2"},
		{"trailing bytes", []byte{0x01, 0x02}, DefaultMaxDepth, "1 trailing bytes at offset 1"},
		{"two values", []byte{0x90, 0x90}, DefaultMaxDepth, "trailing"},
		{"truncated uint32", []byte{0xce, 0x00, 0x01}, DefaultMaxDepth, "uint32 at offset 0 needs 5 bytes but 3 remain"},
		{"truncated float64", []byte{0xcb, 0, 0, 0}, DefaultMaxDepth, "float64"},
		{"truncated fixext16", []byte{0xd8, 0x01, 0x00}, DefaultMaxDepth, "fixext16 at offset 0 needs 18 bytes"},
		{"truncated str16 header", []byte{0xda, 0x00}, DefaultMaxDepth, "str16 header at offset 0 needs 3 bytes but 2 remain"},
		{"truncated ext8 header", []byte{0xc7, 0x01}, DefaultMaxDepth, "ext8 header"},
		{"truncated array32 header", []byte{0xdd, 0x00, 0x00}, DefaultMaxDepth, "array32 header"},
		{"truncated fixstr", []byte{0xa5, 'a', 'b'}, DefaultMaxDepth, "fixstr at offset 0 declares 5 bytes but 2 remain"},
		{"truncated bin8", []byte{0xc4, 0x03, 0x01}, DefaultMaxDepth, "bin8 at offset 0 declares 3 bytes but 1 remain"},
		{"array missing element", []byte{0x93, 0x01, 0x02}, DefaultMaxDepth, "declares 3 elements but 2 bytes remain"},
		{"inner array ends early", []byte{0x92, 0x92, 0x01, 0x02}, DefaultMaxDepth, "input ends at offset 4 but 1 more values are expected at depth 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			err := Check(tc.in, tc.maxDepth)
			if elapsed := time.Since(start); elapsed > time.Second {
				t.Errorf("Check took %v; want well under a second", elapsed)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Check: got %v; want an error wrapping ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check: got %q; want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestCheckErrorMessage(t *testing.T) {
	t.Parallel()
	in := gateCat([]byte{0x92, 0xaa}, []byte("0123456789"), []byte{0xdd, 0xff, 0xff, 0xff, 0xff, 1, 2, 3})
	got := fmt.Sprint(Check(in, DefaultMaxDepth))
	want := "codec: malformed msgpack: array at offset 12 declares 4294967295 elements but 3 bytes remain"
	if got != want {
		t.Fatalf("got %q; want %q", got, want)
	}
}

// TestCheckDeepWithinLimit shows that Check itself never recurses: with a
// generous limit it walks 100000 levels of nesting and accepts them.
func TestCheckDeepWithinLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       []byte
		maxDepth int
	}{
		{"inline stack full", gateNested(64), 64},
		{"heap stack", gateNested(65), 65},
		{"100000 levels", gateNested(100000), 1 << 20},
		{"100000 map levels", append(bytes.Repeat([]byte{0x81, 0xa0}, 100000), 0xc0), 100000},
		{"scalar at depth 0", []byte{0x01}, 0},
		{"scalar with negative limit", []byte{0xc0}, -5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := Check(tc.in, tc.maxDepth); err != nil {
				t.Fatalf("Check: got %v; want nil", err)
			}
		})
	}
}

func TestUnmarshalRejectsAttacks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   []byte
	}{
		{"array32 huge", []byte{0xdd, 0xff, 0xff, 0xff, 0xff}},
		{"map32 huge", []byte{0xdf, 0xff, 0xff, 0xff, 0xff}},
		{"str32 huge", []byte{0xdb, 0xff, 0xff, 0xff, 0xff}},
		{"bin32 huge", []byte{0xc6, 0xff, 0xff, 0xff, 0xff}},
		{"ext32 huge", []byte{0xc9, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"deep nesting", gateNested(100000)},
		{"reserved", []byte{0xc1}},
		{"trailing", []byte{0xc0, 0xc0}},
		{"truncated", []byte{0x92, 0x01}},
		{"empty", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var v any
			start := time.Now()
			err := Unmarshal(tc.in, &v)
			if elapsed := time.Since(start); elapsed > time.Second {
				t.Errorf("Unmarshal took %v; want well under a second", elapsed)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Unmarshal: got %v; want an error wrapping ErrMalformed", err)
			}
			if v != nil {
				t.Fatalf("Unmarshal: target got %v; want it untouched (nil)", v)
			}
		})
	}
}

func TestUnmarshalDecodeErrorWrapped(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		in     []byte
		target any
	}{
		{"string into int", gateMarshal(t, "not a number"), new(int)},
		{"unknown ext id into any", []byte{0xd4, 0x55, 0x00}, new(any)},
		{"time ext of bad size", []byte{0xd4, 0xff, 0x00}, new(time.Time)},
		{"non-pointer target", gateMarshal(t, 1), 0},
		// msgpack panics on these; Unmarshal must turn them into errors.
		{"array as key of map[any]any", []byte{0x81, 0x91, 0x01, 0x02}, new(map[any]any)},
		{"nil into time.Time field", []byte{0x81, 0xa2, 'a', 't', 0xc0}, new(gateTimes)},
		{"nil into time.Time field of array struct", []byte{0x94, 0xc0, 0xa0, 0xa0, 0xa0}, new(gateTimes)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := Check(tc.in, DefaultMaxDepth); err != nil {
				t.Fatalf("Check: got %v; want nil (the input is well formed)", err)
			}
			err := Unmarshal(tc.in, tc.target)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Unmarshal: got %v; want an error wrapping ErrMalformed", err)
			}
			if err.Error() == ErrMalformed.Error() {
				t.Fatalf("Unmarshal: got bare %q; want the decoder's message included", err)
			}
		})
	}
}

// gateTree is a recursive map type, the kind of target through which a
// misread ext could nest the decoder arbitrarily deep.
type gateTree map[string]gateTree

type gateArgs struct {
	Args map[string]any `msgpack:"args"`
	X    int            `msgpack:"x"`
}

// TestUnmarshalExtWhereMapExpected covers msgpack reading an ext payload as
// a map when the target is a Go map. Check accepts all of these inputs.
func TestUnmarshalExtWhereMapExpected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		in     []byte
		target any
		want   string
	}{
		{"map32 header in fixext4 payload", gateCat(
			[]byte{0x82, 0xa4, 'a', 'r', 'g', 's', 0xd6, 0xff, 0xdf, 0xff, 0xff, 0xff},
			[]byte{0xa1, 'x', 0x01}),
			new(gateArgs), "ext payload at offset 8"},
		{"fuzz crasher into map[any]any", []byte("\xd70\x8e\xdf\x95\x95\x95000"), new(map[any]any), "ext payload at offset 2"},
		{"nil in payload", []byte{0xd4, 0x05, 0xc0}, new(map[string]int), "ext payload at offset 2"},
		{"fixmap in ext8 payload", []byte{0xc7, 0x03, 0x05, 0x81, 0xa0, 0xc0}, new(gateTree), "ext payload at offset 3"},
		{"empty ext8 payload", []byte{0x92, 0xc7, 0x00, 0x05, 0x80}, new([]gateTree), "ext8 at offset 1 has an empty payload"},
		{"empty ext16 payload", []byte{0xc8, 0x00, 0x00, 0x05}, new(any), "ext16 at offset 0 has an empty payload"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := Check(tc.in, DefaultMaxDepth); err != nil {
				t.Fatalf("Check: got %v; want nil (the input is well formed)", err)
			}
			start := time.Now()
			err := Unmarshal(tc.in, tc.target)
			if elapsed := time.Since(start); elapsed > time.Second {
				t.Errorf("Unmarshal took %v; want well under a second", elapsed)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Unmarshal: got %v; want an error wrapping ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Unmarshal: got %q; want it to contain %q", err, tc.want)
			}
		})
	}
}

type gateTimes struct {
	At    time.Time      `msgpack:"at"`
	List  []time.Time    `msgpack:"list"`
	Any   any            `msgpack:"any"`
	Index map[string]int `msgpack:"index"`
}

// TestUnmarshalTimestamps checks that the ext guard leaves time.Time alone,
// including timestamps whose payload starts with a byte that msgpack would
// read as a map or nil header.
func TestUnmarshalTimestamps(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		at        time.Time
		wantFirst byte // first payload byte, to show the case is the risky one
	}{
		{"payload starts like fixmap", time.Unix(1700000000, 550000000), 0x83},
		{"payload starts like nil", time.Unix(1700000000, 806000000), 0xc0},
		{"payload starts like map16", time.Unix(1700000000, 935000000), 0xde},
		{"seconds only after 2038", time.Unix(1<<31+5, 0), 0x80},
		{"96-bit form", time.Unix(1<<40, 7), 0x00},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			enc := gateMarshal(t, tc.at)
			off := 2 // fixext4 and fixext8: type byte, ext type, payload
			if enc[0] == 0xc7 {
				off = 3 // ext8 carries a length byte as well
			}
			if enc[off] != tc.wantFirst {
				t.Fatalf("first payload byte: got %#02x; want %#02x", enc[off], tc.wantFirst)
			}
			in := gateTimes{At: tc.at, List: []time.Time{tc.at, tc.at}, Any: tc.at, Index: map[string]int{"a": 1}}
			b, err := Marshal(in)
			if err != nil {
				t.Fatalf("Marshal: got %v; want nil", err)
			}
			var got gateTimes
			if err := Unmarshal(b, &got); err != nil {
				t.Fatalf("Unmarshal: got %v; want nil", err)
			}
			gotAny, _ := got.Any.(time.Time)
			if !got.At.Equal(tc.at) || len(got.List) != 2 || !got.List[1].Equal(tc.at) || !gotAny.Equal(tc.at) || got.Index["a"] != 1 {
				t.Fatalf("Unmarshal: got %+v; want %+v", got, in)
			}
		})
	}
}

func TestGateReader(t *testing.T) {
	t.Parallel()
	r := &gateReader{b: []byte{1, 2, 3, 4, 5}, traps: []int{2, 4}}
	if c, err := r.ReadByte(); c != 1 || err != nil {
		t.Fatalf("ReadByte at 0: got %d, %v; want 1, nil", c, err)
	}
	p := make([]byte, 2)
	if n, err := r.Read(p); n != 2 || err != nil || p[1] != 3 {
		t.Fatalf("Read across a trap: got %d, %v, % x; want 2, nil, 02 03", n, err, p)
	}
	if c, err := r.ReadByte(); c != 4 || err != nil {
		t.Fatalf("ReadByte at 3: got %d, %v; want 4, nil", c, err)
	}
	if _, err := r.ReadByte(); err == nil || !strings.Contains(err.Error(), "offset 4") {
		t.Fatalf("ReadByte at trap 4: got %v; want an error naming offset 4", err)
	}
	r.pos = 3
	if err := r.UnreadByte(); err != nil {
		t.Fatalf("UnreadByte: got %v; want nil", err)
	}
	if _, err := r.ReadByte(); err == nil || !strings.Contains(err.Error(), "offset 2") {
		t.Fatalf("ReadByte at trap 2 after UnreadByte: got %v; want an error naming offset 2", err)
	}
	r.pos = 5
	if _, err := r.ReadByte(); err == nil {
		t.Fatalf("ReadByte at end: got nil error; want io.EOF")
	}
	if n, err := r.Read(p); n != 0 || err == nil {
		t.Fatalf("Read at end: got %d, %v; want 0, io.EOF", n, err)
	}
	r.pos = 0
	if err := r.UnreadByte(); err == nil {
		t.Fatalf("UnreadByte at start: got nil error; want an error")
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2024, 5, 6, 7, 8, 9, 10, time.UTC)
	tests := []struct {
		name string
		in   gateOuter
	}{
		{"zero", gateOuter{}},
		{"full", gateOuter{
			ID:       -7,
			Inner:    gateInner{Name: "n", Score: 2.25, Tags: []string{"x"}, Attrs: map[string]string{"a": "b"}},
			Children: []gateInner{{Name: "c"}},
			Blob:     bytes.Repeat([]byte{9}, 1000),
			Ptr:      &gateInner{Name: "p"},
			At:       at,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, err := Marshal(tc.in)
			if err != nil {
				t.Fatalf("Marshal: got %v; want nil", err)
			}
			want := gateMarshal(t, tc.in)
			if !bytes.Equal(b, want) {
				t.Fatalf("Marshal: got % x; want % x (same as msgpack.Marshal)", b, want)
			}
			var got gateOuter
			if err := Unmarshal(b, &got); err != nil {
				t.Fatalf("Unmarshal: got %v; want nil", err)
			}
			if got.ID != tc.in.ID || got.Inner.Name != tc.in.Inner.Name || !bytes.Equal(got.Blob, tc.in.Blob) ||
				!got.At.Equal(tc.in.At) || (got.Ptr == nil) != (tc.in.Ptr == nil) || len(got.Children) != len(tc.in.Children) {
				t.Fatalf("round trip: got %+v; want %+v", got, tc.in)
			}
		})
	}
}

func TestMarshalDoesNotAlias(t *testing.T) {
	t.Parallel()
	first, err := Marshal("first value")
	if err != nil {
		t.Fatalf("Marshal: got %v; want nil", err)
	}
	saved := bytes.Clone(first)
	for i := range 100 {
		if _, err := Marshal(strings.Repeat("z", i)); err != nil {
			t.Fatalf("Marshal: got %v; want nil", err)
		}
	}
	if !bytes.Equal(first, saved) {
		t.Fatalf("earlier Marshal result changed: got % x; want % x", first, saved)
	}
	second, _ := Marshal("first value")
	second[0] ^= 0xff
	third, _ := Marshal("first value")
	if !bytes.Equal(third, saved) {
		t.Fatalf("Marshal after caller mutation: got % x; want % x", third, saved)
	}
}

func TestMarshalError(t *testing.T) {
	t.Parallel()
	_, err := Marshal(make(chan int))
	if err == nil {
		t.Fatalf("Marshal(chan): got nil error; want an error")
	}
	// The pooled encoder must be usable after a failed encode.
	b, err := Marshal(1)
	if err != nil || !bytes.Equal(b, []byte{0x01}) {
		t.Fatalf("Marshal(1) after failure: got % x, %v; want 01, nil", b, err)
	}
}

func TestCheckDoesNotAllocate(t *testing.T) {
	// Not parallel: AllocsPerRun counts allocations of the whole process.
	payload := gateTaskPayload(t)
	if got := testing.AllocsPerRun(100, func() {
		if err := Check(payload, DefaultMaxDepth); err != nil {
			t.Fatalf("Check: got %v; want nil", err)
		}
	}); got != 0 {
		t.Fatalf("Check allocations per run: got %v; want 0", got)
	}
}

// gateTask resembles the task envelope stored in Redis.
type gateTask struct {
	ID          string         `msgpack:"id"`
	Queue       string         `msgpack:"queue"`
	Kind        string         `msgpack:"kind"`
	Attempt     int            `msgpack:"attempt"`
	MaxAttempts int            `msgpack:"max_attempts"`
	Priority    uint8          `msgpack:"priority"`
	EnqueuedAt  time.Time      `msgpack:"enqueued_at"`
	Deadline    int64          `msgpack:"deadline"`
	Tags        []string       `msgpack:"tags"`
	Args        map[string]any `msgpack:"args"`
	Payload     []byte         `msgpack:"payload"`
}

func newGateTask() gateTask {
	return gateTask{
		ID:          "01HZX3V9K7Q2M8N4P6R5T0W1Y3",
		Queue:       "emails",
		Kind:        "send_welcome",
		Attempt:     1,
		MaxAttempts: 25,
		Priority:    3,
		EnqueuedAt:  time.Unix(1717171717, 123456789),
		Deadline:    1717175317,
		Tags:        []string{"tenant:acme", "region:eu"},
		Args:        map[string]any{"user_id": 123456, "locale": "en-GB", "retry": true},
		Payload:     []byte(`{"template":"welcome-v2"}`),
	}
}

func gateTaskPayload(tb testing.TB) []byte {
	return gateMarshal(tb, newGateTask())
}

func BenchmarkCheck(b *testing.B) {
	payload := gateTaskPayload(b)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if err := Check(payload, DefaultMaxDepth); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	payload := gateTaskPayload(b)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		var task gateTask
		if err := Unmarshal(payload, &task); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshal(b *testing.B) {
	task := newGateTask()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Marshal(task); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMsgpackUnmarshal is the ungated baseline for BenchmarkUnmarshal.
func BenchmarkMsgpackUnmarshal(b *testing.B) {
	payload := gateTaskPayload(b)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		var task gateTask
		if err := msgpack.Unmarshal(payload, &task); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMsgpackMarshal is the baseline Marshal is measured against.
func BenchmarkMsgpackMarshal(b *testing.B) {
	task := newGateTask()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := msgpack.Marshal(task); err != nil {
			b.Fatal(err)
		}
	}
}
