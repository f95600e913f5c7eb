// Package codec wraps github.com/vmihailenco/msgpack/v5 with a structural
// gate for untrusted input.
//
// msgpack v5.4.1 trusts the length fields it reads: a five-byte header such
// as 0xdd 0xff 0xff 0xff 0xff announces four billion array elements, and the
// decoder sizes its allocations from that number before it has seen a single
// element. Deeply nested arrays are decoded by recursion, so a long run of
// 0x91 bytes overflows the goroutine stack, which is a fatal error that
// recover cannot catch (vmihailenco/msgpack issue 401).
//
// Every byte slice read from Redis must therefore pass Check before msgpack
// decodes it. Unmarshal does both steps and is the function callers should
// use; Check is exported for code that decodes by other means.
//
// Check alone is not quite enough for msgpack v5.4.1: when the decoder meets
// an ext value where the target is a Go map, it skips the ext header and
// parses the ext payload, which Check treats as opaque bytes, as a map
// header followed by entries. The well-formed fixext4 d6 ff df ff ff ff,
// followed by any byte, then asks for a map of over four billion entries
// and exhausts memory. Unmarshal closes that path; see its documentation.
package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// ErrMalformed is wrapped by every error that Check and Unmarshal return,
// so callers can test for it with errors.Is. The wrapping error describes
// what is wrong and at which byte offset.
var ErrMalformed = errors.New("codec: malformed msgpack")

// DefaultMaxDepth is the nesting limit that Unmarshal passes to Check: at
// most 32 arrays or maps may enclose one another.
const DefaultMaxDepth = 32

// inlineDepth is how many nesting levels Check tracks in a fixed array on
// its own stack frame. Deeper input (only possible when maxDepth is larger)
// moves the level stack to the heap.
const inlineDepth = 64

// Check reports whether b holds exactly one complete msgpack value and
// nothing after it. It returns nil when b is acceptable and otherwise an
// error wrapping ErrMalformed that names the problem and its byte offset.
//
// b is rejected when:
//   - it is empty, or bytes follow the first complete value;
//   - a header or a value is cut short by the end of b;
//   - it contains the reserved type byte 0xc1;
//   - a str, bin or ext declares a payload longer than the bytes that
//     follow its header;
//   - an array declares n elements and fewer than n bytes follow its header
//     (every element occupies at least one byte);
//   - a map declares n key/value pairs and fewer than 2n bytes follow its
//     header;
//   - arrays and maps are nested more than maxDepth deep. The outermost
//     array or map is at depth 1, a container directly inside it at depth 2,
//     and so on; empty containers count too. A maxDepth of 0 (or less, which
//     is treated as 0) therefore admits only a single scalar value.
//
// Check walks b once, front to back, keeping a counter of outstanding values
// per open container instead of recursing, so neither the length fields nor
// the nesting of b can make it use more than O(min(depth, len(b))) memory. It
// does not allocate unless the input is rejected or nests deeper than 64
// levels.
//
// Ext payloads are opaque to Check: only their length is checked, so a
// timestamp (ext -1) of an unexpected size passes and is left for the
// decoder to refuse. Code that parses an ext payload as msgpack must Check
// the payload itself; Unmarshal never lets the decoder do so.
func Check(b []byte, maxDepth int) error {
	return walk(b, maxDepth, nil)
}

// walk implements Check. If exts is not nil, walk also appends to it the
// offset at which each ext payload starts (in increasing order) and rejects
// ext values with an empty payload; see Unmarshal for why.
func walk(b []byte, maxDepth int, exts *[]int) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: empty input", ErrMalformed)
	}
	if maxDepth < 0 {
		maxDepth = 0
	}

	// stack[i] is the number of values still expected by the i-th open
	// container (a map of n pairs expects 2n values). A container is
	// pushed only while it has values outstanding.
	var inline [inlineDepth]uint64
	stack := inline[:0]

	pos := 0
	for {
		if pos >= len(b) {
			return fmt.Errorf("%w: input ends at offset %d but %d more values are expected at depth %d",
				ErrMalformed, pos, stack[len(stack)-1], len(stack))
		}
		start := pos
		c := b[pos]
		rest := len(b) - pos // bytes from this type byte to the end of b

		container := false
		isMap := false
		var declared uint64 // elements or pairs a container header announces

		switch {
		case c <= 0x7f || c >= 0xe0: // positive and negative fixint
			pos++
		case c <= 0x8f: // fixmap
			container, isMap = true, true
			declared = uint64(c & 0x0f)
			pos++
		case c <= 0x9f: // fixarray
			container = true
			declared = uint64(c & 0x0f)
			pos++
		case c <= 0xbf: // fixstr
			n := int(c & 0x1f)
			if n > rest-1 {
				return errPayload("fixstr", start, uint64(n), rest-1)
			}
			pos += 1 + n
		default:
			switch c {
			case 0xc0, 0xc2, 0xc3: // nil, false, true
				pos++
			case 0xc1:
				return fmt.Errorf("%w: reserved type byte 0xc1 at offset %d", ErrMalformed, start)

			case 0xca, 0xcb, // float32, float64
				0xcc, 0xcd, 0xce, 0xcf, // uint8..uint64
				0xd0, 0xd1, 0xd2, 0xd3, // int8..int64
				0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext1..fixext16
				size := fixedSize(c)
				if size > rest {
					return fmt.Errorf("%w: %s at offset %d needs %d bytes but %d remain",
						ErrMalformed, formatName(c), start, size, rest)
				}
				if exts != nil && c >= 0xd4 { // fixext: payload after type byte and ext type
					*exts = append(*exts, start+2)
				}
				pos += size

			case 0xc4, 0xc5, 0xc6, // bin8, bin16, bin32
				0xc7, 0xc8, 0xc9, // ext8, ext16, ext32
				0xd9, 0xda, 0xdb: // str8, str16, str32
				hdr, width := varHeader(c)
				if hdr > rest {
					return errHeader(c, start, hdr, rest)
				}
				n := readLen(b[pos+1:], width)
				if avail := rest - hdr; n > uint64(avail) {
					return errPayload(formatName(c), start, n, avail)
				}
				if exts != nil && c >= 0xc7 && c <= 0xc9 { // ext8, ext16, ext32
					if n == 0 {
						return fmt.Errorf("%w: %s at offset %d has an empty payload, which the decoder could mistake for the next value",
							ErrMalformed, formatName(c), start)
					}
					*exts = append(*exts, start+hdr)
				}
				pos += hdr + int(n)

			case 0xdc, 0xdd, 0xde, 0xdf: // array16, array32, map16, map32
				width := 2
				if c == 0xdd || c == 0xdf {
					width = 4
				}
				if 1+width > rest {
					return errHeader(c, start, 1+width, rest)
				}
				container = true
				isMap = c >= 0xde
				declared = readLen(b[pos+1:], width)
				pos += 1 + width
			}
		}

		if container {
			if len(stack) >= maxDepth {
				return fmt.Errorf("%w: %s at offset %d is nested %d deep, more than the limit of %d",
					ErrMalformed, containerName(isMap), start, len(stack)+1, maxDepth)
			}
			values := declared
			if isMap {
				values = 2 * declared // at most 2*(2^32-1): no overflow
			}
			if avail := len(b) - pos; values > uint64(avail) {
				if isMap {
					return fmt.Errorf("%w: map at offset %d declares %d pairs but %d bytes remain",
						ErrMalformed, start, declared, avail)
				}
				return fmt.Errorf("%w: array at offset %d declares %d elements but %d bytes remain",
					ErrMalformed, start, declared, avail)
			}
			if values > 0 {
				stack = append(stack, values)
				continue
			}
		}

		// A whole value ends at pos. Count it against its container, and
		// close every container that this completes.
		for {
			top := len(stack) - 1
			if top < 0 {
				if pos != len(b) {
					return fmt.Errorf("%w: %d trailing bytes at offset %d after a complete value",
						ErrMalformed, len(b)-pos, pos)
				}
				return nil
			}
			stack[top]--
			if stack[top] != 0 {
				break
			}
			stack = stack[:top]
		}
	}
}

// fixedSize is the total encoded size, type byte included, of the formats
// whose size the type byte alone determines.
func fixedSize(c byte) int {
	switch c {
	case 0xcc, 0xd0:
		return 2
	case 0xcd, 0xd1:
		return 3
	case 0xca, 0xce, 0xd2:
		return 5
	case 0xcb, 0xcf, 0xd3:
		return 9
	case 0xd4: // fixext1: type byte, ext type, 1 data byte
		return 3
	case 0xd5:
		return 4
	case 0xd6:
		return 6
	case 0xd7:
		return 10
	case 0xd8:
		return 18
	}
	panic("codec: fixedSize called with a variable-size format")
}

// varHeader returns, for str8..32, bin8..32 and ext8..32, the header size
// (type byte, length field and, for ext, the ext type byte) and the width of
// the big-endian length field.
func varHeader(c byte) (hdr, width int) {
	switch c {
	case 0xc4, 0xd9:
		return 2, 1
	case 0xc5, 0xda:
		return 3, 2
	case 0xc6, 0xdb:
		return 5, 4
	case 0xc7:
		return 3, 1
	case 0xc8:
		return 4, 2
	case 0xc9:
		return 6, 4
	}
	panic("codec: varHeader called with a fixed-size format")
}

// readLen decodes a big-endian unsigned length of width 1, 2 or 4 bytes
// from the start of p; the caller has checked that p is long enough.
func readLen(p []byte, width int) uint64 {
	switch width {
	case 1:
		return uint64(p[0])
	case 2:
		return uint64(binary.BigEndian.Uint16(p))
	default:
		return uint64(binary.BigEndian.Uint32(p))
	}
}

func errHeader(c byte, off, need, have int) error {
	return fmt.Errorf("%w: %s header at offset %d needs %d bytes but %d remain",
		ErrMalformed, formatName(c), off, need, have)
}

func errPayload(name string, off int, declared uint64, have int) error {
	return fmt.Errorf("%w: %s at offset %d declares %d bytes but %d remain after its header",
		ErrMalformed, name, off, declared, have)
}

func containerName(isMap bool) string {
	if isMap {
		return "map"
	}
	return "array"
}

// formatName names the msgpack formats whose type byte is 0xc0 or above, for
// error messages.
func formatName(c byte) string {
	if c >= 0xc0 && c <= 0xdf {
		return formatNames[c-0xc0]
	}
	return fmt.Sprintf("type byte %#02x", c)
}

var formatNames = [32]string{
	"nil", "reserved", "false", "true",
	"bin8", "bin16", "bin32",
	"ext8", "ext16", "ext32",
	"float32", "float64",
	"uint8", "uint16", "uint32", "uint64",
	"int8", "int16", "int32", "int64",
	"fixext1", "fixext2", "fixext4", "fixext8", "fixext16",
	"str8", "str16", "str32",
	"array16", "array32",
	"map16", "map32",
}

// Unmarshal decodes the msgpack value in b into v, which must be a non-nil
// pointer, and returns nil or an error wrapping ErrMalformed.
//
// b is first validated as by Check(b, DefaultMaxDepth), with one extra
// rule: an ext value (ext8, ext16, ext32) with an empty payload is refused.
// The decoder is not called if validation fails, and v is then untouched.
//
// The decoder then reads b through a reader that refuses to hand out the
// first byte of an ext payload as a msgpack type byte. Ext payloads are
// opaque to Check, so nothing may parse them as msgpack: built-in and
// RegisterExt types, which read the payload as raw bytes (time.Time
// included), decode normally, whereas an ext found where v expects a map,
// which msgpack v5.4.1 would read through into its payload, fails. So do
// ext decoders registered with RegisterExtDecoder that parse their payload
// with the *msgpack.Decoder. Empty payloads are refused because there the
// misread would start at the next value instead.
//
// A decoder error (for instance a value that does not fit v, or an invalid
// timestamp) is returned wrapped, so errors.Is reports both ErrMalformed and
// the decoder's own error; v may then have been partly written.
//
// msgpack v5.4.1 panics on some well-formed input: nil for a time.Time
// struct field (a *reflect.ValueError), or a map keyed by an array decoded
// into a map[any]any ("hash of unhashable type"). Unmarshal recovers any
// panic raised while decoding, including one from a custom decoder, and
// returns it as an error wrapping ErrMalformed (and the panic value, if
// that is an error).
func Unmarshal(b []byte, v any) error {
	r := readerPool.Get().(*gateReader)
	r.traps = r.traps[:0]
	if err := walk(b, DefaultMaxDepth, &r.traps); err != nil {
		readerPool.Put(r)
		return err
	}
	r.b, r.pos, r.next = b, 0, 0
	err := decode(r, v)
	r.b = nil
	if cap(r.traps) <= maxPooledTraps {
		readerPool.Put(r)
	}
	if err != nil {
		return fmt.Errorf("%w: decode: %w", ErrMalformed, err)
	}
	return nil
}

// decode runs a pooled msgpack decoder over r and turns a panic into an
// error. A decoder that panicked is not returned to the pool.
func decode(r *gateReader, v any) (err error) {
	dec := msgpack.GetDecoder()
	defer func() {
		if p := recover(); p != nil {
			if perr, ok := p.(error); ok {
				err = fmt.Errorf("decoder panicked: %w", perr)
			} else {
				err = fmt.Errorf("decoder panicked: %v", p)
			}
			return
		}
		msgpack.PutDecoder(dec)
	}()
	// Reset clears the decoder's options, exactly as msgpack.Unmarshal
	// leaves them.
	dec.Reset(r)
	return dec.Decode(v)
}

// maxPooledTraps caps the trap list kept by a pooled gateReader.
const maxPooledTraps = 1024

var readerPool = sync.Pool{New: func() any { return new(gateReader) }}

// gateReader serves b to the msgpack decoder like a bytes.Reader, except
// that ReadByte fails at any offset listed in traps. walk lists there the
// start of every ext payload; the decoder reads payload bytes with Read,
// and only calls ReadByte on one when it is about to parse it as msgpack.
type gateReader struct {
	b     []byte
	pos   int
	traps []int // ascending
	next  int   // index of the first trap at or after pos
}

func (r *gateReader) Read(p []byte) (int, error) {
	if r.pos >= len(r.b) {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := copy(p, r.b[r.pos:])
	r.pos += n
	return n, nil
}

func (r *gateReader) ReadByte() (byte, error) {
	if r.pos >= len(r.b) {
		return 0, io.EOF
	}
	for r.next < len(r.traps) && r.traps[r.next] < r.pos {
		r.next++
	}
	for r.next > 0 && r.traps[r.next-1] >= r.pos {
		r.next--
	}
	if r.next < len(r.traps) && r.traps[r.next] == r.pos {
		return 0, fmt.Errorf("the ext payload at offset %d would be parsed as msgpack (an ext where a map is expected?)", r.pos)
	}
	c := r.b[r.pos]
	r.pos++
	return c, nil
}

func (r *gateReader) UnreadByte() error {
	if r.pos <= 0 {
		return errors.New("codec: UnreadByte at the start of the input")
	}
	r.pos--
	return nil
}

// maxPooledBuffer caps the capacity of buffers returned to encoderPool, so
// that one very large value does not stay pinned in memory.
const maxPooledBuffer = 64 << 10

type pooledEncoder struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

var encoderPool = sync.Pool{
	New: func() any {
		p := new(pooledEncoder)
		p.enc = msgpack.NewEncoder(&p.buf)
		return p
	},
}

// Marshal returns the msgpack encoding of v, produced with the default
// settings of msgpack.NewEncoder except that the keys of maps of type
// map[string]string, map[string]bool and map[string]any are sorted, so the
// same value encodes the same every time (patterns.Repeat compares
// declarations by their encoding). The
// returned slice is freshly allocated and owned by the caller; it never
// shares memory with the pooled buffers Marshal encodes into.
func Marshal(v any) ([]byte, error) {
	p := encoderPool.Get().(*pooledEncoder)
	p.buf.Reset()
	p.enc.Reset(&p.buf)
	p.enc.SetSortMapKeys(true)
	err := p.enc.Encode(v)
	var out []byte
	if err == nil {
		out = bytes.Clone(p.buf.Bytes())
	}
	if p.buf.Cap() <= maxPooledBuffer {
		encoderPool.Put(p)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}
