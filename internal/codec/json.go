package codec

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
)

// The JSON rule (docs/wire.md, "Args and results as JSON") maps JSON values
// to msgpack and back, so that services in any language can send a task's
// args as JSON and read its result as JSON:
//
//	JSON                          msgpack
//	null                          nil
//	true, false                   bool
//	a number without . e E        int (int64 range), uint (above it), else float64
//	a number with . e E           float64
//	"text"                        str
//	[...]                         array
//	{...}                         map with str keys, in document order
//	{"$bytes": "<base64>"}        bin (standard base64, padded)
//	{"$time": "<RFC 3339>"}       timestamp extension (-1), as Go's time.Time
//	{"$float": "NaN"}             float64 NaN ("+Inf" and "-Inf" likewise)
//
// Integers take the smallest msgpack encoding, as msgpack's Encoder writes
// Go integers: positive ones as positive fixint or uint8..uint64, negative
// ones as negative fixint or int8..int64. "-0" is the integer 0. An integer
// beyond int64 and uint64 and any number with a fraction or an exponent
// becomes a float64 (the nearest one); a number beyond the float64 range
// (1e400) is refused. What a Go handler's fields then take is msgpack's
// decoding (v5): int and uint fields take whole JSON numbers (wrapping
// those out of their range, as they do for msgpack written by Go: 300 into
// an int8 is 44, -1 into a uint its maximum), float64 fields take any
// number, and a number with a fraction or an exponent, even 3.0 or 1e3, is
// refused by an int field ("invalid code=cb decoding int64") and by a
// float32 field ("invalid code=cb decoding float32"): handlers that take
// JSON args want float64 for their fractional fields.
//
// Strings are UTF-8: invalid UTF-8, and \u escapes of a lone UTF-16
// surrogate, are refused rather than replaced. Object keys become map keys
// in document order, which is what msgpack decodes into a struct by field
// name (or msgpack tag); an object that has the same key twice is refused,
// since a handler would see only one of the values.
//
// A marker is an object whose only key is "$bytes", "$time" or "$float"; its
// value must be a string of the stated form, else the object is refused. An
// object with any other key besides is an ordinary map. "$time" takes what
// time.Parse takes with time.RFC3339Nano (a fraction of up to nine digits,
// "Z" or an offset) for instants within years 0000 to 9999 UTC, and is
// encoded exactly as msgpack encodes a time.Time (4, 8 or 12 bytes of
// payload), so a time.Time field takes it. "$bytes" is standard padded
// base64 (RFC 4648, section 4) with no line breaks and no stray bits.
//
// ToJSON is the inverse. Its output is compact JSON; floats are written in
// the shortest form that reads back as the same float64 (as encoding/json
// writes them), with ".0" added when that form would read as an integer, so
// a float64 stays a float64 across FromJSON(ToJSON(x)); a float32 is written
// at float32 precision. Times come out in UTC with as many fraction digits
// as they need. Strings are escaped as encoding/json escapes them, except
// that <, > and & are left as they are; invalid UTF-8 becomes U+FFFD.
// msgpack that JSON cannot spell comes out as markers too:
// {"$float": "NaN"|"+Inf"|"-Inf"}, and {"$ext": {"type": n, "data":
// "<base64>"}} for an extension other than a timestamp (or a timestamp that
// is not valid, or outside years 0000 to 9999); FromJSON does not read
// "$ext", which stays an ordinary map. Map keys that are not strings are
// written as their JSON text ("1", "true", "null", "1.5"; "NaN"; a bin key
// as its base64, a timestamp key as its RFC 3339 text); an array, map or
// other extension as a key is an error.
//
// ToJSON(FromJSON(j)) is j compacted, with the number, time and \u escape
// spellings above; FromJSON(ToJSON(x)) is x for every x that FromJSON made.
// Other msgpack may not come back the same: a float32 or an extension
// changes type, map keys that are not strings become strings (and may then
// repeat one another), and a map whose only key is a marker name (a Go
// map[string]string{"$time": "soon"}) reads back as a marker or is refused.
//
// Both directions are single passes that append to the caller's buffer and
// allocate little beyond it: FromJSON for "$time" markers, some floats and
// objects of more than 16 keys (a set to find duplicate keys), ToJSON
// nothing.

// JSONError says where in a JSON value the rule failed. Path is a JSONPath-like
// name of the value ("files[2].name"; "" for the whole value), Offset the
// byte offset in the input (-1 when unknown).
//
// Keys made of ASCII letters, digits, '_', '-' and '$' appear bare in Path;
// other keys in brackets as JSON strings (`a["x y"]`). From ToJSON, Offset is
// the offset in the msgpack input.
type JSONError struct {
	Path   string
	Offset int
	Msg    string
}

func (e *JSONError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Field returns e's Path below the value named parent: Field("args") is
// "args" for the whole value, "args.files[2].name" or "args[0]" below it.
func (e *JSONError) Field(parent string) string {
	return joinPath(parent, e.Path)
}

// joinPath puts the path below a value after that value's name.
func joinPath(parent, below string) string {
	switch {
	case below == "":
		return parent
	case parent == "" && below[0] == '.':
		return below[1:]
	case parent == "" || below[0] == '[' || below[0] == '.':
		return parent + below
	}
	return parent + "." + below
}

// prefixKey puts the object key k in front of e.Path.
func (e *JSONError) prefixKey(k []byte) *JSONError {
	bare := len(k) > 0
	for _, c := range k {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '$') {
			bare = false
			break
		}
	}
	var seg string
	if bare {
		seg = string(k)
	} else {
		seg = "[" + string(appendJSONString(nil, k)) + "]"
	}
	e.Path = joinPath(seg, e.Path)
	return e
}

// prefixIndex puts the array index i in front of e.Path.
func (e *JSONError) prefixIndex(i int) *JSONError {
	e.Path = joinPath("["+strconv.Itoa(i)+"]", e.Path)
	return e
}

// Raw is a msgpack value that is already encoded: its EncodeMsgpack writes
// the bytes as they are, and an empty Raw as nil. It lets args made by
// FromJSON travel as a task's args (embed Raw in a type with a Kind
// method). The bytes must be one complete msgpack value, as FromJSON makes
// or Check accepts: nothing checks them again before they are sent.
type Raw []byte

// EncodeMsgpack writes r to enc unchanged.
func (r Raw) EncodeMsgpack(enc *msgpack.Encoder) error {
	if len(r) == 0 {
		return enc.EncodeNil()
	}
	_, err := enc.Writer().Write(r)
	return err
}

// FromJSON appends to dst the msgpack of the one JSON value in js, by the
// JSON rule, and returns it. Containers nested deeper than maxDepth (0 means
// DefaultMaxDepth) are refused, as are invalid UTF-8, trailing data, and
// malformed markers. Its errors are *JSONError.
//
// Depth counts as Check counts it: the outermost array or object is at
// depth 1, and markers are not containers. FromJSON recurses once per
// level, so maxDepth also bounds its stack (a few hundred bytes a level).
// Whitespace around the value is allowed. On error dst is returned with its original length (its spare
// capacity may have been written).
func FromJSON(dst, js []byte, maxDepth int) ([]byte, error) {
	if maxDepth <= 0 {
		maxDepth = DefaultMaxDepth
	}
	s := scanner{in: js, out: dst, max: maxDepth}
	s.ws()
	if s.pos >= len(js) {
		return dst, s.fail("no JSON value")
	}
	if err := s.value(0); err != nil {
		return dst, err
	}
	s.ws()
	if s.pos < len(js) {
		return dst, s.fail(fmt.Sprintf("data after the JSON value: %s", s.near()))
	}
	return s.out, nil
}

// scanner reads JSON from in at pos and appends msgpack to out.
type scanner struct {
	in  []byte
	pos int
	out []byte
	max int
}

// span is a range of out.
type span struct{ off, n int }

func (s *scanner) fail(msg string) *JSONError {
	return &JSONError{Offset: s.pos, Msg: msg}
}

func (s *scanner) failAt(off int, msg string) *JSONError {
	return &JSONError{Offset: off, Msg: msg}
}

// near describes the input at pos for an error message.
func (s *scanner) near() string {
	if s.pos >= len(s.in) {
		return "end of input"
	}
	c := s.in[s.pos]
	if c < utf8.RuneSelf {
		return fmt.Sprintf("%q", c)
	}
	return fmt.Sprintf("byte %#02x", c)
}

func (s *scanner) ws() {
	for s.pos < len(s.in) {
		switch s.in[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// value reads one value; level is the number of containers around it.
func (s *scanner) value(level int) *JSONError {
	if s.pos >= len(s.in) {
		return s.fail("unexpected end of input, want a value")
	}
	switch c := s.in[s.pos]; c {
	case '{':
		return s.object(level)
	case '[':
		return s.array(level)
	case '"':
		return s.str()
	case 't':
		return s.literal("true", 0xc3)
	case 'f':
		return s.literal("false", 0xc2)
	case 'n':
		return s.literal("null", 0xc0)
	default:
		if c == '-' || '0' <= c && c <= '9' {
			return s.number()
		}
		return s.fail(fmt.Sprintf("unexpected %s, want a value", s.near()))
	}
}

func (s *scanner) literal(word string, code byte) *JSONError {
	if len(s.in)-s.pos < len(word) || string(s.in[s.pos:s.pos+len(word)]) != word {
		return s.fail(fmt.Sprintf("unexpected %s, want a value", s.near()))
	}
	s.pos += len(word)
	s.out = append(s.out, code)
	return nil
}

func (s *scanner) deeper(level, start int) *JSONError {
	if level+1 > s.max {
		return s.failAt(start, fmt.Sprintf("nested %d deep, more than the limit of %d", level+1, s.max))
	}
	return nil
}

func (s *scanner) array(level int) *JSONError {
	start := s.pos
	if err := s.deeper(level, start); err != nil {
		return err
	}
	s.pos++
	hdr := len(s.out)
	s.out = append(s.out, 0x90)
	s.ws()
	n := 0
	if s.pos < len(s.in) && s.in[s.pos] == ']' {
		s.pos++
		return nil
	}
	for {
		if err := s.value(level + 1); err != nil {
			return err.prefixIndex(n)
		}
		n++
		s.ws()
		if s.pos >= len(s.in) {
			return s.fail("unexpected end of input in an array, want ',' or ']'")
		}
		switch s.in[s.pos] {
		case ',':
			s.pos++
			s.ws()
		case ']':
			s.pos++
			return s.header(hdr, n, 0x90, 0xdc, 0xdd, start)
		default:
			return s.fail(fmt.Sprintf("unexpected %s in an array, want ',' or ']'", s.near()))
		}
	}
}

// header writes the header of the container whose one-byte placeholder is
// at out[hdr], now that it is known to hold n elements (or pairs).
func (s *scanner) header(hdr, n int, fix, c16, c32 byte, start int) *JSONError {
	switch {
	case n < 16:
		s.out[hdr] = fix | byte(n)
	case n <= math.MaxUint16:
		s.out = append(s.out, 0, 0)
		copy(s.out[hdr+3:], s.out[hdr+1:len(s.out)-2])
		s.out[hdr] = c16
		binary.BigEndian.PutUint16(s.out[hdr+1:], uint16(n))
	case uint64(n) <= math.MaxUint32:
		s.out = append(s.out, 0, 0, 0, 0)
		copy(s.out[hdr+5:], s.out[hdr+1:len(s.out)-4])
		s.out[hdr] = c32
		binary.BigEndian.PutUint32(s.out[hdr+1:], uint32(n))
	default:
		return s.failAt(start, "more than 2^32-1 elements")
	}
	return nil
}

// Marker names.
const (
	markBytes = "$bytes"
	markTime  = "$time"
	markFloat = "$float"
)

func isMarker(k []byte) bool {
	return len(k) > 0 && k[0] == '$' &&
		(string(k) == markBytes || string(k) == markTime || string(k) == markFloat)
}

// manyKeys is the number of keys past which object looks for duplicates in
// a set instead of comparing with every earlier key.
const manyKeys = 16

func (s *scanner) object(level int) *JSONError {
	start := s.pos
	s.pos++
	hdr := len(s.out)
	s.out = append(s.out, 0x80)
	s.ws()
	if s.pos < len(s.in) && s.in[s.pos] == '}' {
		s.pos++
		return s.deeper(level, start)
	}
	// The object's keys, in out, to find duplicates: the first manyKeys in
	// keys, all of them in seen once there are more.
	var buf [manyKeys]span
	keys := buf[:0]
	var seen map[string]struct{}
	n := 0
	for {
		if s.pos >= len(s.in) || s.in[s.pos] != '"' {
			return s.fail(fmt.Sprintf("unexpected %s in an object, want a string key", s.near()))
		}
		keyAt := s.pos
		kpos := len(s.out)
		if err := s.str(); err != nil {
			return err
		}
		key := s.out[kpos+strHeaderLen(s.out[kpos]):]
		k := span{len(s.out) - len(key), len(key)}
		marker := n == 0 && isMarker(key)
		if !marker {
			if err := s.deeper(level, start); err != nil {
				return err
			}
		}
		switch {
		case n < manyKeys:
			for _, o := range keys {
				if bytes.Equal(s.out[o.off:o.off+o.n], key) {
					return s.failAt(keyAt, fmt.Sprintf("key %s appears twice in an object", appendJSONString(nil, key))).prefixKey(key)
				}
			}
			keys = append(keys, k)
		default:
			if seen == nil {
				seen = make(map[string]struct{}, 2*manyKeys)
				for _, o := range keys {
					seen[string(s.out[o.off:o.off+o.n])] = struct{}{}
				}
			}
			if _, dup := seen[string(key)]; dup {
				return s.failAt(keyAt, fmt.Sprintf("key %s appears twice in an object", appendJSONString(nil, key))).prefixKey(key)
			}
			seen[string(key)] = struct{}{}
		}
		s.ws()
		if s.pos >= len(s.in) || s.in[s.pos] != ':' {
			return s.fail(fmt.Sprintf("unexpected %s after an object key, want ':'", s.near()))
		}
		s.pos++
		s.ws()
		vpos, valueAt := len(s.out), s.pos
		if err := s.value(level + 1); err != nil {
			return err.prefixKey(s.out[k.off : k.off+k.n])
		}
		n++
		s.ws()
		if s.pos >= len(s.in) {
			return s.fail("unexpected end of input in an object, want ',' or '}'")
		}
		switch s.in[s.pos] {
		case ',':
			s.pos++
			s.ws()
			if marker {
				// Not a marker after all: an ordinary map.
				if err := s.deeper(level, start); err != nil {
					return err
				}
				marker = false
			}
		case '}':
			s.pos++
			if marker {
				return s.marker(hdr, kpos, vpos, valueAt)
			}
			return s.header(hdr, n, 0x80, 0xde, 0xdf, start)
		default:
			return s.fail(fmt.Sprintf("unexpected %s in an object, want ',' or '}'", s.near()))
		}
	}
}

// marker replaces the one-key map at out[hdr:] (key at kpos, value at vpos,
// read from input offset valueAt) with the value its marker stands for.
func (s *scanner) marker(hdr, kpos, vpos, valueAt int) *JSONError {
	key := string(s.out[kpos+1 : vpos]) // a marker name is a fixstr
	c := s.out[vpos]
	if !isStrCode(c) {
		return s.failAt(valueAt, fmt.Sprintf("malformed %s marker: %s", key, markerWant(key)))
	}
	v := s.out[vpos+strHeaderLen(c):]
	switch key {
	case markBytes:
		if bytes.ContainsAny(v, "\r\n") {
			return s.failAt(valueAt, "malformed $bytes marker: "+markerWant(key))
		}
		n := base64.StdEncoding.DecodedLen(len(v))
		tmp := len(s.out)
		s.out = append(s.out, make([]byte, n)...)
		n, err := base64.StdEncoding.Strict().Decode(s.out[tmp:], v)
		if err != nil {
			return s.failAt(valueAt, "malformed $bytes marker: "+markerWant(key))
		}
		out := appendBinHeader(s.out[:hdr], n)
		copy(s.out[len(out):], s.out[tmp:tmp+n])
		s.out = s.out[:len(out)+n]
	case markTime:
		t, err := time.Parse(time.RFC3339Nano, string(v))
		if u := t.Unix(); err != nil || u < minTimestamp || u > maxTimestamp {
			return s.failAt(valueAt, "malformed $time marker: "+markerWant(key))
		}
		s.out = appendTime(s.out[:hdr], t)
	case markFloat:
		var f float64
		switch string(v) {
		case "NaN":
			f = math.NaN()
		case "+Inf":
			f = math.Inf(1)
		case "-Inf":
			f = math.Inf(-1)
		default:
			return s.failAt(valueAt, "malformed $float marker: "+markerWant(key))
		}
		s.out = appendFloat64(s.out[:hdr], f)
	}
	return nil
}

func markerWant(key string) string {
	switch key {
	case markBytes:
		return "want a string of standard padded base64"
	case markTime:
		return `want an RFC 3339 time string ("2026-01-02T15:04:05.5Z")`
	}
	return `want "NaN", "+Inf" or "-Inf"`
}

// strSafe[c] is true for the bytes a JSON string holds as they are and that
// need no check: ASCII other than controls, '"' and '\'.
var strSafe = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str reads a string and appends it as a msgpack str.
func (s *scanner) str() *JSONError {
	start := s.pos + 1
	i := start
	for i < len(s.in) {
		c := s.in[i]
		if strSafe[c] {
			i++
			continue
		}
		if c == '"' {
			s.out = appendStrHeader(s.out, i-start)
			s.out = append(s.out, s.in[start:i]...)
			s.pos = i + 1
			return nil
		}
		if c == '\\' {
			return s.escapedStr(start)
		}
		if c < 0x20 {
			s.pos = i
			return s.fail(fmt.Sprintf("control character %#02x in a string", c))
		}
		r, size := utf8.DecodeRune(s.in[i:])
		if r == utf8.RuneError && size <= 1 {
			s.pos = i
			return s.fail("invalid UTF-8 in a string")
		}
		i += size
	}
	s.pos = len(s.in)
	return s.fail("unexpected end of input in a string")
}

// escapedStr reads a string that has escapes, from its first byte at
// start.
func (s *scanner) escapedStr(start int) *JSONError {
	// Find the end first: the decoded string is at most as long, which
	// fixes the size of its header (give or take a boundary).
	end := start
	for end < len(s.in) && s.in[end] != '"' {
		if s.in[end] == '\\' {
			end++
		}
		end++
	}
	if end >= len(s.in) {
		s.pos = len(s.in)
		return s.fail("unexpected end of input in a string")
	}
	hdr := len(s.out)
	s.out = appendStrHeader(s.out, end-start)
	body := len(s.out)
	i := start
	for i < end {
		c := s.in[i]
		if strSafe[c] {
			j := i + 1
			for j < end && strSafe[s.in[j]] {
				j++
			}
			s.out = append(s.out, s.in[i:j]...)
			i = j
			continue
		}
		if c < 0x20 {
			s.pos = i
			return s.fail(fmt.Sprintf("control character %#02x in a string", c))
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(s.in[i:end])
			if r == utf8.RuneError && size <= 1 {
				s.pos = i
				return s.fail("invalid UTF-8 in a string")
			}
			s.out = append(s.out, s.in[i:i+size]...)
			i += size
			continue
		}
		// A backslash; end was found skipping escaped bytes, so one follows.
		s.pos = i
		switch e := s.in[i+1]; e {
		case '"', '\\', '/':
			s.out = append(s.out, e)
		case 'b':
			s.out = append(s.out, '\b')
		case 'f':
			s.out = append(s.out, '\f')
		case 'n':
			s.out = append(s.out, '\n')
		case 'r':
			s.out = append(s.out, '\r')
		case 't':
			s.out = append(s.out, '\t')
		case 'u':
			r, ok := hex4(s.in[i+2 : end])
			if !ok {
				return s.fail(`malformed \u escape, want four hex digits`)
			}
			switch {
			case r >= 0xd800 && r < 0xdc00:
				var r2 rune = -1
				if end-(i+6) >= 6 && s.in[i+6] == '\\' && s.in[i+7] == 'u' {
					r2, _ = hex4(s.in[i+8 : end])
				}
				if r2 < 0xdc00 || r2 >= 0xe000 {
					return s.fail(fmt.Sprintf(`\u%04x is half of a UTF-16 surrogate pair without its other half`, r))
				}
				r = 0x10000 + (r-0xd800)<<10 + (r2 - 0xdc00)
				i += 6
			case r >= 0xdc00 && r < 0xe000:
				return s.fail(fmt.Sprintf(`\u%04x is half of a UTF-16 surrogate pair without its other half`, r))
			}
			s.out = utf8.AppendRune(s.out, r)
			i += 6
			continue
		default:
			return s.fail(fmt.Sprintf("unknown escape \\%c in a string", e))
		}
		i += 2
	}
	s.pos = end + 1
	// The header was sized for end-start bytes; the string may need a
	// shorter one.
	n := len(s.out) - body
	if h := strHeaderSize(n); h != body-hdr {
		copy(s.out[hdr+h:], s.out[body:])
		s.out = s.out[:hdr+h+n]
		putStrHeader(s.out[hdr:], n, h)
	} else {
		putStrHeader(s.out[hdr:], n, h)
	}
	return nil
}

// hex4 reads four hex digits from the start of p.
func hex4(p []byte) (rune, bool) {
	if len(p) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range p[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

func (s *scanner) number() *JSONError {
	start := s.pos
	in := s.in
	i := s.pos
	neg := in[i] == '-'
	if neg {
		i++
	}
	if i >= len(in) || in[i] < '0' || in[i] > '9' {
		s.pos = i
		return s.fail(fmt.Sprintf("unexpected %s in a number, want a digit", s.near()))
	}
	var mag uint64
	over := false
	if in[i] == '0' {
		i++
		if i < len(in) && '0' <= in[i] && in[i] <= '9' {
			s.pos = start
			return s.fail("a number with a leading zero")
		}
	} else {
		for ; i < len(in) && '0' <= in[i] && in[i] <= '9'; i++ {
			d := uint64(in[i] - '0')
			if mag > (math.MaxUint64-d)/10 {
				over = true
			}
			mag = mag*10 + d
		}
	}
	isFloat := false
	if i < len(in) && in[i] == '.' {
		i++
		if i >= len(in) || in[i] < '0' || in[i] > '9' {
			s.pos = i
			return s.fail(fmt.Sprintf("unexpected %s after a decimal point, want a digit", s.near()))
		}
		for i < len(in) && '0' <= in[i] && in[i] <= '9' {
			i++
		}
		isFloat = true
	}
	if i < len(in) && (in[i] == 'e' || in[i] == 'E') {
		i++
		if i < len(in) && (in[i] == '+' || in[i] == '-') {
			i++
		}
		if i >= len(in) || in[i] < '0' || in[i] > '9' {
			s.pos = i
			return s.fail(fmt.Sprintf("unexpected %s in an exponent, want a digit", s.near()))
		}
		for i < len(in) && '0' <= in[i] && in[i] <= '9' {
			i++
		}
		isFloat = true
	}
	s.pos = i
	if !isFloat && !over {
		switch {
		case !neg:
			s.out = appendUint(s.out, mag)
			return nil
		case mag <= 1<<63:
			s.out = appendInt64(s.out, int64(-mag))
			return nil
		}
	}
	f, err := strconv.ParseFloat(string(in[start:i]), 64)
	if err != nil {
		s.pos = start
		return s.fail(fmt.Sprintf("number %.40s is beyond the range of float64", in[start:i]))
	}
	s.out = appendFloat64(s.out, f)
	return nil
}

// msgpack writers for FromJSON. Integers and times are encoded as
// msgpack.Encoder encodes Go values.

func appendUint(b []byte, n uint64) []byte {
	switch {
	case n <= math.MaxInt8:
		return append(b, byte(n))
	case n <= math.MaxUint8:
		return append(b, 0xcc, byte(n))
	case n <= math.MaxUint16:
		return append(b, 0xcd, byte(n>>8), byte(n))
	case n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcf), n)
}

func appendInt64(b []byte, n int64) []byte {
	switch {
	case n >= 0:
		return appendUint(b, uint64(n))
	case n >= -32:
		return append(b, byte(n))
	case n >= math.MinInt8:
		return append(b, 0xd0, byte(n))
	case n >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(n))
	case n >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(n))
}

func appendFloat64(b []byte, f float64) []byte {
	return binary.BigEndian.AppendUint64(append(b, 0xcb), math.Float64bits(f))
}

func appendBinHeader(b []byte, n int) []byte {
	switch {
	case n <= math.MaxUint8:
		return append(b, 0xc4, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xc5), uint16(n))
	}
	return binary.BigEndian.AppendUint32(append(b, 0xc6), uint32(n))
}

func strHeaderSize(n int) int {
	switch {
	case n < 32:
		return 1
	case n <= math.MaxUint8:
		return 2
	case n <= math.MaxUint16:
		return 3
	}
	return 5
}

func appendStrHeader(b []byte, n int) []byte {
	h := strHeaderSize(n)
	b = append(b, 0, 0, 0, 0, 0)[:len(b)+h]
	putStrHeader(b[len(b)-h:], n, h)
	return b
}

// putStrHeader writes the h-byte header of a str of n bytes at p.
func putStrHeader(p []byte, n, h int) {
	switch h {
	case 1:
		p[0] = 0xa0 | byte(n)
	case 2:
		p[0], p[1] = 0xd9, byte(n)
	case 3:
		p[0] = 0xda
		binary.BigEndian.PutUint16(p[1:], uint16(n))
	default:
		p[0] = 0xdb
		binary.BigEndian.PutUint32(p[1:], uint32(n))
	}
}

func isStrCode(c byte) bool {
	return c&0xe0 == 0xa0 || c == 0xd9 || c == 0xda || c == 0xdb
}

// strHeaderLen is the size of the header of the str whose type byte is c.
func strHeaderLen(c byte) int {
	switch c {
	case 0xd9:
		return 2
	case 0xda:
		return 3
	case 0xdb:
		return 5
	}
	return 1
}

// appendTime appends t as msgpack's Encoder encodes a time.Time: a
// timestamp extension (-1) of 4, 8 or 12 bytes.
func appendTime(b []byte, t time.Time) []byte {
	secs := uint64(t.Unix())
	if secs>>34 == 0 {
		data := uint64(t.Nanosecond())<<34 | secs
		if data&0xffffffff00000000 == 0 {
			return binary.BigEndian.AppendUint32(append(b, 0xd6, 0xff), uint32(data))
		}
		return binary.BigEndian.AppendUint64(append(b, 0xd7, 0xff), data)
	}
	b = binary.BigEndian.AppendUint32(append(b, 0xc7, 12, 0xff), uint32(t.Nanosecond()))
	return binary.BigEndian.AppendUint64(b, secs)
}

// ToJSON appends to dst the JSON of the one msgpack value in mp, by the
// inverse of the JSON rule, and returns it. mp is checked by the gate
// (Check with DefaultMaxDepth) first: bytes read from Redis are never
// trusted.
//
// Its errors are those of Check (wrapping ErrMalformed) and a *JSONError
// for a map key that JSON cannot spell (an array, a map, an extension other
// than a timestamp). On error dst is returned with its original length.
func ToJSON(dst, mp []byte) ([]byte, error) {
	if err := Check(mp, DefaultMaxDepth); err != nil {
		return dst, err
	}
	w := jsonWriter{in: mp, out: dst}
	if err := w.value(); err != nil {
		return dst, err
	}
	return w.out, nil
}

// jsonWriter reads msgpack that Check accepted from in at pos and appends
// JSON to out.
type jsonWriter struct {
	in  []byte
	pos int
	out []byte
}

// next reads n bytes.
func (w *jsonWriter) next(n int) []byte {
	p := w.in[w.pos : w.pos+n]
	w.pos += n
	return p
}

// length reads a big-endian length of width bytes.
func (w *jsonWriter) length(width int) int {
	return int(readLen(w.next(width), width))
}

func (w *jsonWriter) value() *JSONError {
	c := w.in[w.pos]
	w.pos++
	switch {
	case c <= 0x7f:
		w.out = strconv.AppendUint(w.out, uint64(c), 10)
		return nil
	case c >= 0xe0:
		w.out = strconv.AppendInt(w.out, int64(int8(c)), 10)
		return nil
	case c <= 0x8f:
		return w.object(int(c & 0x0f))
	case c <= 0x9f:
		return w.array(int(c & 0x0f))
	case c <= 0xbf:
		w.out = appendJSONString(w.out, w.next(int(c&0x1f)))
		return nil
	}
	switch c {
	case 0xc0:
		w.out = append(w.out, "null"...)
	case 0xc2:
		w.out = append(w.out, "false"...)
	case 0xc3:
		w.out = append(w.out, "true"...)
	case 0xc4, 0xc5, 0xc6:
		p := w.next(w.length(1 << (c - 0xc4)))
		w.out = append(w.out, `{"$bytes":"`...)
		w.out = base64.StdEncoding.AppendEncode(w.out, p)
		w.out = append(w.out, `"}`...)
	case 0xc7, 0xc8, 0xc9:
		n := w.length(1 << (c - 0xc7))
		w.ext(int8(w.next(1)[0]), w.next(n))
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
		typ := int8(w.next(1)[0])
		w.ext(typ, w.next(1<<(c-0xd4)))
	case 0xca:
		w.out = appendJSONFloat(w.out, float64(math.Float32frombits(uint32(w.length(4)))), 32)
	case 0xcb:
		w.out = appendJSONFloat(w.out, math.Float64frombits(readLen64(w.next(8))), 64)
	case 0xcc, 0xcd, 0xce, 0xcf:
		w.out = strconv.AppendUint(w.out, w.uint(c), 10)
	case 0xd0, 0xd1, 0xd2, 0xd3:
		w.out = strconv.AppendInt(w.out, w.int(c), 10)
	case 0xd9, 0xda, 0xdb:
		w.out = appendJSONString(w.out, w.next(w.length(1<<(c-0xd9))))
	case 0xdc, 0xdd:
		return w.array(w.length(2 << (c - 0xdc)))
	case 0xde, 0xdf:
		return w.object(w.length(2 << (c - 0xde)))
	}
	return nil
}

func readLen64(p []byte) uint64 { return binary.BigEndian.Uint64(p) }

func (w *jsonWriter) uint(c byte) uint64 {
	switch c {
	case 0xcc:
		return uint64(w.next(1)[0])
	case 0xcd:
		return uint64(binary.BigEndian.Uint16(w.next(2)))
	case 0xce:
		return uint64(binary.BigEndian.Uint32(w.next(4)))
	}
	return binary.BigEndian.Uint64(w.next(8))
}

func (w *jsonWriter) int(c byte) int64 {
	switch c {
	case 0xd0:
		return int64(int8(w.next(1)[0]))
	case 0xd1:
		return int64(int16(binary.BigEndian.Uint16(w.next(2))))
	case 0xd2:
		return int64(int32(binary.BigEndian.Uint32(w.next(4))))
	}
	return int64(binary.BigEndian.Uint64(w.next(8)))
}

func (w *jsonWriter) array(n int) *JSONError {
	w.out = append(w.out, '[')
	for i := range n {
		if i > 0 {
			w.out = append(w.out, ',')
		}
		if err := w.value(); err != nil {
			return err.prefixIndex(i)
		}
	}
	w.out = append(w.out, ']')
	return nil
}

func (w *jsonWriter) object(n int) *JSONError {
	w.out = append(w.out, '{')
	for i := range n {
		if i > 0 {
			w.out = append(w.out, ',')
		}
		keyAt := len(w.out)
		if err := w.key(); err != nil {
			return err
		}
		keyEnd := len(w.out)
		w.out = append(w.out, ':')
		if err := w.value(); err != nil {
			k, _ := strconv.Unquote(string(w.out[keyAt:keyEnd]))
			return err.prefixKey([]byte(k))
		}
	}
	w.out = append(w.out, '}')
	return nil
}

// key writes a map key as a JSON string.
func (w *jsonWriter) key() *JSONError {
	at := w.pos
	c := w.in[w.pos]
	switch {
	case isStrCode(c):
		return w.value()
	case c <= 0x7f || c >= 0xe0 || c >= 0xca && c <= 0xd3 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		if c == 0xca || c == 0xcb {
			var f float64
			w.pos++
			if c == 0xca {
				f = float64(math.Float32frombits(uint32(w.length(4))))
			} else {
				f = math.Float64frombits(readLen64(w.next(8)))
			}
			w.out = append(w.out, '"')
			if s := nonFinite(f); s != "" {
				w.out = append(w.out, s...)
			} else {
				w.out = appendJSONFloat(w.out, f, 32<<(c-0xca))
			}
			w.out = append(w.out, '"')
			return nil
		}
		w.out = append(w.out, '"')
		w.value()
		w.out = append(w.out, '"')
		return nil
	case c >= 0xc4 && c <= 0xc6:
		w.pos++
		p := w.next(w.length(1 << (c - 0xc4)))
		w.out = append(w.out, '"')
		w.out = base64.StdEncoding.AppendEncode(w.out, p)
		w.out = append(w.out, '"')
		return nil
	case c == 0xd6 || c == 0xd7 || c == 0xc7:
		save := w.pos
		w.pos++
		var typ int8
		var p []byte
		if c == 0xc7 {
			n := w.length(1)
			typ, p = int8(w.next(1)[0]), w.next(n)
		} else {
			typ, p = int8(w.next(1)[0]), w.next(1<<(c-0xd4))
		}
		if t, ok := timestamp(typ, p); ok {
			w.out = append(w.out, '"')
			w.out = t.AppendFormat(w.out, time.RFC3339Nano)
			w.out = append(w.out, '"')
			return nil
		}
		w.pos = save
	}
	what := "an extension"
	switch {
	case c&0xf0 == 0x80 || c == 0xde || c == 0xdf:
		what = "a map"
	case c&0xf0 == 0x90 || c == 0xdc || c == 0xdd:
		what = "an array"
	}
	return &JSONError{Offset: at, Msg: what + " as a map key has no JSON form"}
}

// ext writes an extension value: a timestamp as a $time marker, others as
// $ext.
func (w *jsonWriter) ext(typ int8, p []byte) {
	if t, ok := timestamp(typ, p); ok {
		w.out = append(w.out, `{"$time":"`...)
		w.out = t.AppendFormat(w.out, time.RFC3339Nano)
		w.out = append(w.out, `"}`...)
		return
	}
	w.out = append(w.out, `{"$ext":{"type":`...)
	w.out = strconv.AppendInt(w.out, int64(typ), 10)
	w.out = append(w.out, `,"data":"`...)
	w.out = base64.StdEncoding.AppendEncode(w.out, p)
	w.out = append(w.out, `"}}`...)
}

// timestamp decodes the payload p of a timestamp extension (type -1) of 4,
// 8 or 12 bytes, in UTC. It reports false for other extensions, other
// lengths, nanoseconds past 999999999, and times that RFC 3339 cannot
// write (years before 0000 or after 9999).
func timestamp(typ int8, p []byte) (time.Time, bool) {
	if typ != -1 {
		return time.Time{}, false
	}
	var secs int64
	var nsec uint32
	switch len(p) {
	case 4:
		secs = int64(binary.BigEndian.Uint32(p))
	case 8:
		data := binary.BigEndian.Uint64(p)
		nsec, secs = uint32(data>>34), int64(data&(1<<34-1))
	case 12:
		nsec, secs = binary.BigEndian.Uint32(p), int64(binary.BigEndian.Uint64(p[4:]))
	default:
		return time.Time{}, false
	}
	if nsec > 999999999 {
		return time.Time{}, false
	}
	if secs < minTimestamp || secs > maxTimestamp {
		return time.Time{}, false
	}
	return time.Unix(secs, int64(nsec)).UTC(), true
}

// The times the JSON rule spells in RFC 3339, in Unix seconds: years 0000
// to 9999 UTC.
const (
	minTimestamp = -62167219200 // 0000-01-01T00:00:00Z
	maxTimestamp = 253402300799 // 9999-12-31T23:59:59Z
)

func nonFinite(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	return ""
}

// appendJSONFloat writes f as encoding/json writes a float of the given
// bits (32 or 64), with ".0" after a form that would read as an integer;
// NaN and infinities as $float markers.
func appendJSONFloat(b []byte, f float64, bits int) []byte {
	if s := nonFinite(f); s != "" {
		b = append(b, `{"$float":"`...)
		b = append(b, s...)
		return append(b, `"}`...)
	}
	fmt := byte('f')
	if abs := math.Abs(f); abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) ||
			bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			fmt = 'e'
		}
	}
	start := len(b)
	b = strconv.AppendFloat(b, f, fmt, -1, bits)
	if fmt == 'e' {
		// Clean up e-09 to e-9, as encoding/json does.
		if n := len(b) - start; n >= 4 && b[len(b)-4] == 'e' && b[len(b)-3] == '-' && b[len(b)-2] == '0' {
			b[len(b)-2] = b[len(b)-1]
			b = b[:len(b)-1]
		}
		return b
	}
	if bytes.IndexByte(b[start:], '.') < 0 {
		b = append(b, ".0"...)
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendJSONString writes s as a JSON string, as encoding/json does without
// HTML escaping: invalid UTF-8 becomes U+FFFD, and U+2028 and U+2029 are
// escaped.
func appendJSONString(b, s []byte) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if strSafe[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
