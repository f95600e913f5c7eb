package codec

import (
	"errors"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// FuzzCheck feeds arbitrary bytes to Check and verifies that
//   - Check never panics and only returns errors wrapping ErrMalformed;
//   - Check agrees with gateRefAccepts, a plain recursive reading of the msgpack
//     grammar, at several depth limits;
//   - whatever Check accepts, msgpack can decode into an `any` without
//     panicking, and when that decode succeeds the re-encoded value passes
//     Check again;
//   - Unmarshal never panics or errs without ErrMalformed, whatever the
//     target type.
func FuzzCheck(f *testing.F) {
	for _, tc := range gateValidCases(f) {
		if len(tc.in) <= 4096 {
			f.Add(tc.in)
		}
	}
	f.Add(gateTaskPayload(f))
	for _, attack := range [][]byte{
		{0xdd, 0xff, 0xff, 0xff, 0xff},
		{0xdf, 0xff, 0xff, 0xff, 0xff},
		{0xdb, 0xff, 0xff, 0xff, 0xff},
		{0xc6, 0xff, 0xff, 0xff, 0xff},
		{0xc9, 0xff, 0xff, 0xff, 0xff, 0x01},
		gateNested(100000),
		gateNested(DefaultMaxDepth + 1),
		{0xc1},
		{0xc0, 0xc0},
		{0x92, 0x01},
		{},
	} {
		f.Add(attack)
	}

	f.Fuzz(func(t *testing.T, b []byte) {
		err := Check(b, DefaultMaxDepth)
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("Check: got %v; want nil or an error wrapping ErrMalformed", err)
		}
		for _, depth := range []int{0, 1, 2, DefaultMaxDepth} {
			got := Check(b, depth) == nil
			if want := gateRefAccepts(b, depth); got != want {
				t.Fatalf("Check(% x, %d) accepted = %v; want %v (reference)", b, depth, got, want)
			}
		}
		if err != nil {
			return
		}

		// Unmarshal must neither panic nor blow up for any target type.
		// Map targets matter most: msgpack reads ext payloads through
		// them, and panics on unhashable keys for map[any]any.
		for _, target := range []any{
			new(any), new(map[any]any), new(map[string]any), new(map[string]string),
			new(gateTree), new([]map[string]int), new(gateArgs), new(gateTimes),
		} {
			if err := Unmarshal(b, target); err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("Unmarshal into %T: got %v; want nil or ErrMalformed", target, err)
			}
		}

		var v any
		if err := msgpack.Unmarshal(b, &v); err != nil {
			// Well-formed but not decodable (unknown ext id, non-string
			// map key, ...). Our wrapper must say so as ErrMalformed.
			var w any
			if werr := Unmarshal(b, &w); !errors.Is(werr, ErrMalformed) {
				t.Fatalf("Unmarshal: got %v; want an error wrapping ErrMalformed", werr)
			}
			return
		}
		out, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatalf("re-encoding %#v: got error %v; want nil", v, err)
		}
		if err := Check(out, DefaultMaxDepth); err != nil {
			t.Fatalf("Check(re-encoded % x from % x): got %v; want nil", out, b, err)
		}
	})
}

// gateRefAccepts is a deliberately simple recursive recogniser used as an
// oracle. The recursion is bounded by maxDepth, so it is only safe for the
// small limits the fuzz target uses.
func gateRefAccepts(b []byte, maxDepth int) bool {
	rest, ok := gateRefValue(b, 0, maxDepth)
	return ok && len(rest) == 0
}

// gateRefValue consumes one value from the front of b. depth is the number of
// containers already open around it.
func gateRefValue(b []byte, depth, maxDepth int) ([]byte, bool) {
	if len(b) == 0 {
		return nil, false
	}
	c, b := b[0], b[1:]

	// length reads a big-endian length of w bytes.
	length := func(w int) (uint64, bool) {
		if len(b) < w {
			return 0, false
		}
		var n uint64
		for _, x := range b[:w] {
			n = n<<8 | uint64(x)
		}
		b = b[w:]
		return n, true
	}
	skip := func(n uint64) ([]byte, bool) {
		if uint64(len(b)) < n {
			return nil, false
		}
		return b[n:], true
	}
	children := func(n uint64) ([]byte, bool) {
		if depth+1 > maxDepth {
			return nil, false
		}
		for ; n > 0; n-- {
			var ok bool
			if b, ok = gateRefValue(b, depth+1, maxDepth); !ok {
				return nil, false
			}
		}
		return b, true
	}

	switch {
	case c <= 0x7f, c >= 0xe0:
		return b, true
	case c <= 0x8f:
		return children(2 * uint64(c-0x80))
	case c <= 0x9f:
		return children(uint64(c - 0x90))
	case c <= 0xbf:
		return skip(uint64(c - 0xa0))
	}

	switch c {
	case 0xc0, 0xc2, 0xc3:
		return b, true
	case 0xcc, 0xd0:
		return skip(1)
	case 0xcd, 0xd1:
		return skip(2)
	case 0xca, 0xce, 0xd2:
		return skip(4)
	case 0xcb, 0xcf, 0xd3:
		return skip(8)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
		return skip(1 + 1<<(c-0xd4))
	}

	widths := map[byte]int{
		0xc4: 1, 0xc5: 2, 0xc6: 4, // bin
		0xd9: 1, 0xda: 2, 0xdb: 4, // str
		0xc7: 1, 0xc8: 2, 0xc9: 4, // ext
		0xdc: 2, 0xdd: 4, // array
		0xde: 2, 0xdf: 4, // map
	}
	w, known := widths[c]
	if !known { // 0xc1
		return nil, false
	}
	n, ok := length(w)
	if !ok {
		return nil, false
	}
	switch c {
	case 0xc7, 0xc8, 0xc9:
		return skip(n + 1) // ext type byte, then payload
	case 0xdc, 0xdd:
		return children(n)
	case 0xde, 0xdf:
		return children(2 * n)
	default:
		return skip(n)
	}
}
