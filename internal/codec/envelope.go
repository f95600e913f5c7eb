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
	// EnqueuedMs is when the task was enqueued, Unix ms in Redis time; 0
	// when not kept: an auto-keyed task's key is its first entry id, which
	// tells.
	EnqueuedMs int64
	// History is the task's attempts that failed, oldest first: the last
	// MaxHistory of them (AppendAttempt).
	History []Attempt
}

// Attempt is one ended attempt of a task, as its envelope keeps it.
type Attempt struct {
	Attempt    int
	StartedMs  int64 // Unix ms, Redis time (the worker's estimate)
	FinishedMs int64
	Error      string // at most MaxHistoryError bytes
	Worker     string // the worker's name
}

// Bounds of an envelope's History.
const (
	MaxHistory      = 10   // attempts kept
	MaxHistoryError = 1024 // bytes of each attempt's error kept
	maxHistoryName  = 256  // bytes of each attempt's worker name kept
)

// AppendAttempt adds a to e's History, dropping the oldest attempts past
// MaxHistory and cutting a's error and worker name to their bounds (at a
// UTF-8 boundary).
func (e *Envelope) AppendAttempt(a Attempt) {
	a.Error = cut(a.Error, MaxHistoryError)
	a.Worker = cut(a.Worker, maxHistoryName)
	h := make([]Attempt, 0, min(len(e.History)+1, MaxHistory))
	if len(e.History) >= MaxHistory {
		h = append(h, e.History[len(e.History)-MaxHistory+1:]...)
	} else {
		h = append(h, e.History...)
	}
	e.History = append(h, a)
}

// cut returns s cut to at most n bytes, not splitting a UTF-8 sequence.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n]
}

// MaxRetainMs bounds an envelope's RetainMs: 2^53-1 ms (some 285,000
// years), well past any time.Duration, and a count Redis' Lua numbers hold
// exactly. Redis refuses an expiry that overflows its clock, so the scripts
// that write a retention never pass more.
const MaxRetainMs = 1<<53 - 1

const (
	envelopeFields = 9  // always present
	envelopeAll    = 23 // with the optional ones
	attemptFields  = 5  // of each History entry
)

// AppendEnvelope appends the encoding of e to b. It does not allocate beyond
// growing b.
func AppendEnvelope(b []byte, e *Envelope) []byte {
	full := e.DeadlineMs != 0 || len(e.Meta) > 0 || e.TraceParent != "" || e.TraceState != "" || e.Parent != "" || e.Prev != "" || e.Group != "" || e.RateKey != "" || e.Partition != "" ||
		e.EnqueuedMs != 0 || len(e.History) > 0
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
	b = appendInt(b, e.EnqueuedMs)
	b = appendArrayLen(b, len(e.History))
	for _, a := range e.History {
		b = appendArrayLen(b, attemptFields)
		b = appendInt(b, int64(a.Attempt))
		b = appendInt(b, a.StartedMs)
		b = appendInt(b, a.FinishedMs)
		b = appendStr(b, a.Error)
		b = appendStr(b, a.Worker)
	}
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
	if n >= 21 {
		e.Partition = r.str()
	}
	if n >= 22 {
		e.EnqueuedMs = r.int()
	}
	if n >= envelopeAll {
		if m := r.arrayLen(); m > 0 && r.err == nil {
			if m > MaxHistory {
				r.fail(fmt.Sprintf("a history of at most %d attempts", MaxHistory))
			} else {
				e.History = make([]Attempt, m)
				for i := range e.History {
					e.History[i] = r.attempt()
				}
			}
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("envelope: %v: %w", r.err, ErrMalformed)
	}
	return e, nil
}

// attempt decodes one History entry: an array of at least attemptFields
// values (fields past them, from a newer writer, are skipped).
func (r *reader) attempt() Attempt {
	n := r.arrayLen()
	if r.err != nil {
		return Attempt{}
	}
	if n < attemptFields {
		r.fail(fmt.Sprintf("an attempt of at least %d fields", attemptFields))
		return Attempt{}
	}
	a := Attempt{Attempt: int(r.int()), StartedMs: r.int(), FinishedMs: r.int(), Error: r.str(), Worker: r.str()}
	for i := attemptFields; i < n && r.err == nil; i++ {
		r.skip()
	}
	return a
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

// skip passes over one value of any type, from input the gate has already
// checked (so its nesting is bounded).
func (r *reader) skip() {
	c := r.byte()
	if r.err != nil {
		return
	}
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
	case c&0xf0 == 0x80:
		for i := 0; i < 2*int(c&0x0f) && r.err == nil; i++ {
			r.skip()
		}
	case c&0xf0 == 0x90:
		for i := 0; i < int(c&0x0f) && r.err == nil; i++ {
			r.skip()
		}
	case c&0xe0 == 0xa0:
		r.raw(int(c & 0x1f))
	case c == 0xcc || c == 0xd0:
		r.raw(1)
	case c == 0xcd || c == 0xd1:
		r.raw(2)
	case c == 0xce || c == 0xd2 || c == 0xca:
		r.raw(4)
	case c == 0xcf || c == 0xd3 || c == 0xcb:
		r.raw(8)
	case c == 0xd4:
		r.raw(2)
	case c == 0xd5:
		r.raw(3)
	case c == 0xd6:
		r.raw(5)
	case c == 0xd7:
		r.raw(9)
	case c == 0xd8:
		r.raw(17)
	case c == 0xc4 || c == 0xd9:
		r.raw(int(r.uint(1)))
	case c == 0xc5 || c == 0xda:
		r.raw(int(r.uint(2)))
	case c == 0xc6 || c == 0xdb:
		r.raw(int(r.uint(4)))
	case c == 0xc7:
		r.raw(int(r.uint(1)) + 1)
	case c == 0xc8:
		r.raw(int(r.uint(2)) + 1)
	case c == 0xc9:
		r.raw(int(r.uint(4)) + 1)
	case c == 0xdc || c == 0xdd:
		var n int
		if c == 0xdc {
			n = int(r.uint(2))
		} else {
			n = int(r.uint(4))
		}
		for i := 0; i < n && r.err == nil; i++ {
			r.skip()
		}
	case c == 0xde || c == 0xdf:
		var n int
		if c == 0xde {
			n = int(r.uint(2))
		} else {
			n = int(r.uint(4))
		}
		for i := 0; i < 2*n && r.err == nil; i++ {
			r.skip()
		}
	default:
		r.fail("a msgpack value")
	}
}
