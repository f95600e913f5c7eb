package codec

import "fmt"

// Envelope is what a stream entry carries: the task's identity, its typed
// payload and the options that travel with every attempt. It is encoded as a
// msgpack array (field order is the wire format: append fields, never reorder).
type Envelope struct {
	Key         string // task key; empty on the first attempt of an auto-keyed task (the key is then the entry id)
	Kind        string
	Payload     []byte // msgpack of the args
	Attempt     int    // 1-based number of the attempt this entry starts
	MaxAttempts int
	TimeoutMs   int64 // per-attempt handler timeout; 0 = none
	RetainMs    int64 // result retention
	Parked      int   // times handed back because no worker had the kind's handler
	Lost        int   // deliveries of earlier entries of this task that ended without an outcome (worker crashes)

	// Optional fields (encoded when any is set).
	DeadlineMs  int64    // the task's deadline, Unix ms in Redis time; 0 = none
	Meta        []string // metadata as key, value pairs
	TraceParent string   // W3C traceparent
	TraceState  string   // W3C tracestate
	Parent      string   // id of the task whose handler enqueued this one (child tasks)
	Prev        string   // id of the task this one continues (ContinueWith)
	Group       string   // public id of the group the task is a member of
	RateKey     string   // the token bucket the task takes from before it runs
	RateN       int      // with RatePerUs: the bucket's limit, carried (patterns.Throttle)
	RatePerUs   int64
	RateTurn    int64  // the turn (Redis µs) the rate limiter gave this task when it refused it
	Partition   string // partition key: tasks of one key run one at a time, in order
}

// MaxRetainMs bounds an envelope's RetainMs: 2^53-1 ms (some 285,000
// years), well past any time.Duration, and a count Redis' Lua numbers hold
// exactly. Redis refuses an expiry that overflows its clock, so the scripts
// that write a retention never pass more.
const MaxRetainMs = 1<<53 - 1

const (
	envelopeFields = 9  // always present
	envelopeAll    = 21 // with the optional ones
)

// AppendEnvelope appends the encoding of e to b. It does not allocate beyond
// growing b.
func AppendEnvelope(b []byte, e *Envelope) []byte {
	full := e.DeadlineMs != 0 || len(e.Meta) > 0 || e.TraceParent != "" || e.TraceState != "" || e.Parent != "" || e.Prev != "" || e.Group != "" || e.RateKey != "" || e.Partition != ""
	if full {
		b = appendArrayLen(b, envelopeAll)
	} else {
		b = appendArrayLen(b, envelopeFields)
	}
	b = appendStr(b, e.Key)
	b = appendStr(b, e.Kind)
	b = appendBin(b, e.Payload)
	b = appendInt(b, int64(e.Attempt))
	b = appendInt(b, int64(e.MaxAttempts))
	b = appendInt(b, e.TimeoutMs)
	b = appendInt(b, e.RetainMs)
	b = appendInt(b, int64(e.Parked))
	b = appendInt(b, int64(e.Lost))
	if !full {
		return b
	}
	b = appendInt(b, e.DeadlineMs)
	b = appendArrayLen(b, len(e.Meta))
	for _, m := range e.Meta {
		b = appendStr(b, m)
	}
	b = appendStr(b, e.TraceParent)
	b = appendStr(b, e.TraceState)
	b = appendStr(b, e.Parent)
	b = appendStr(b, e.Prev)
	b = appendStr(b, e.Group)
	b = appendStr(b, e.RateKey)
	b = appendInt(b, int64(e.RateN))
	b = appendInt(b, e.RatePerUs)
	b = appendInt(b, e.RateTurn)
	b = appendStr(b, e.Partition)
	return b
}

// DecodeEnvelope decodes an envelope after passing it through the gate.
// Fields past the known ones (from a newer writer) are ignored. Payload aliases b.
func DecodeEnvelope(b []byte) (*Envelope, error) {
	if err := Check(b, 4); err != nil {
		return nil, fmt.Errorf("envelope: %w", err)
	}
	r := reader{b: b}
	n := r.arrayLen()
	if r.err != nil || n < envelopeFields {
		return nil, fmt.Errorf("envelope: want an array of at least %d fields, got %d: %w", envelopeFields, n, ErrMalformed)
	}
	e := &Envelope{
		Key:     r.str(),
		Kind:    r.str(),
		Payload: r.bin(),
	}
	e.Attempt = int(r.int())
	e.MaxAttempts = int(r.int())
	e.TimeoutMs = r.int()
	e.RetainMs = r.int()
	e.Parked = int(r.int())
	e.Lost = int(r.int())
	if n >= 15 {
		e.DeadlineMs = r.int()
		if m := r.arrayLen(); m > 0 && r.err == nil {
			if m%2 != 0 || m > len(b) {
				r.fail("an even number of metadata strings")
			} else {
				e.Meta = make([]string, m)
				for i := range e.Meta {
					e.Meta[i] = r.str()
				}
			}
		}
		e.TraceParent = r.str()
		e.TraceState = r.str()
		e.Parent = r.str()
		e.Prev = r.str()
	}
	if n >= 16 {
		e.Group = r.str()
	}
	if n >= 19 {
		e.RateKey = r.str()
		e.RateN = int(r.int())
		e.RatePerUs = r.int()
	}
	if n >= 20 {
		e.RateTurn = r.int()
	}
	if n >= envelopeAll {
		e.Partition = r.str()
	}
	if r.err != nil {
		return nil, fmt.Errorf("envelope: %v: %w", r.err, ErrMalformed)
	}
	return e, nil
}

// reader decodes the few msgpack types an envelope uses, from input the gate
// has already checked.
type reader struct {
	b   []byte
	i   int
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("unexpected type at offset %d, want %s", r.i, what)
	}
}

func (r *reader) uint(n int) uint64 {
	if r.err != nil || r.i+n > len(r.b) {
		r.fail("more bytes")
		return 0
	}
	var v uint64
	for _, c := range r.b[r.i : r.i+n] {
		v = v<<8 | uint64(c)
	}
	r.i += n
	return v
}

func (r *reader) byte() byte {
	if r.err != nil || r.i >= len(r.b) {
		r.fail("more bytes")
		return 0
	}
	c := r.b[r.i]
	r.i++
	return c
}

func (r *reader) arrayLen() int {
	c := r.byte()
	switch {
	case c&0xf0 == 0x90:
		return int(c & 0x0f)
	case c == 0xdc:
		return int(r.uint(2))
	case c == 0xdd:
		return int(r.uint(4))
	}
	r.fail("array")
	return 0
}

func (r *reader) raw(n int) []byte {
	if r.err != nil || n < 0 || r.i+n > len(r.b) {
		r.fail("more bytes")
		return nil
	}
	p := r.b[r.i : r.i+n : r.i+n]
	r.i += n
	return p
}

func (r *reader) str() string {
	c := r.byte()
	switch {
	case c&0xe0 == 0xa0:
		return string(r.raw(int(c & 0x1f)))
	case c == 0xd9:
		return string(r.raw(int(r.uint(1))))
	case c == 0xda:
		return string(r.raw(int(r.uint(2))))
	case c == 0xdb:
		return string(r.raw(int(r.uint(4))))
	case c == 0xc0:
		return ""
	}
	r.fail("string")
	return ""
}

func (r *reader) bin() []byte {
	c := r.byte()
	switch c {
	case 0xc4:
		return r.raw(int(r.uint(1)))
	case 0xc5:
		return r.raw(int(r.uint(2)))
	case 0xc6:
		return r.raw(int(r.uint(4)))
	case 0xc0:
		return nil
	}
	r.fail("bin")
	return nil
}

func (r *reader) int() int64 {
	c := r.byte()
	switch {
	case c < 0x80:
		return int64(c)
	case c >= 0xe0:
		return int64(int8(c))
	}
	switch c {
	case 0xcc:
		return int64(r.uint(1))
	case 0xcd:
		return int64(r.uint(2))
	case 0xce:
		return int64(r.uint(4))
	case 0xcf:
		return int64(r.uint(8))
	case 0xd0:
		return int64(int8(r.uint(1)))
	case 0xd1:
		return int64(int16(r.uint(2)))
	case 0xd2:
		return int64(int32(r.uint(4)))
	case 0xd3:
		return int64(r.uint(8))
	}
	r.fail("integer")
	return 0
}

func appendStr(b []byte, s string) []byte {
	n := len(s)
	switch {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n < 1<<8:
		b = append(b, 0xd9, byte(n))
	case n < 1<<16:
		b = append(b, 0xda, byte(n>>8), byte(n))
	default:
		b = append(b, 0xdb, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, s...)
}

func appendArrayLen(b []byte, n int) []byte {
	if n < 16 {
		return append(b, 0x90|byte(n))
	}
	if n < 1<<16 {
		return append(b, 0xdc, byte(n>>8), byte(n))
	}
	return append(b, 0xdd, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

func appendBin(b []byte, p []byte) []byte {
	n := len(p)
	switch {
	case n < 1<<8:
		b = append(b, 0xc4, byte(n))
	case n < 1<<16:
		b = append(b, 0xc5, byte(n>>8), byte(n))
	default:
		b = append(b, 0xc6, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, p...)
}

func appendInt(b []byte, v int64) []byte {
	switch {
	case v >= 0 && v < 128:
		return append(b, byte(v))
	case v < 0 && v >= -32:
		return append(b, byte(v))
	default:
		u := uint64(v)
		return append(b, 0xd3, byte(u>>56), byte(u>>48), byte(u>>40), byte(u>>32), byte(u>>24), byte(u>>16), byte(u>>8), byte(u))
	}
}
