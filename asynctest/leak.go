package asynctest

import (
	"bytes"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"
)

// leakBound is how long the cleanup waits for the fleet's goroutines to
// end once everything is stopped.
const leakBound = 5 * time.Second

// checkLeaks fails the test, listing their stacks, if goroutines carrying
// the fleet's label are still there after leakBound. Goroutines inherit
// the labels of the goroutine that starts them: every goroutine the
// fleet's components start, and those their handlers start, carry it. (A
// function time.AfterFunc runs starts on whatever goroutine ran the
// runtime's timers, labeled or not: those are short-lived, and waited
// for like the others.) Goroutines of net/http's keep-alive connections
// (a handler's HTTP call leaves them in its Transport's pool) and those
// Options.IgnoreGoroutines names are not counted.
func (f *Fleet) checkLeaks() {
	f.t.Helper()
	bound := leakBound
	if f.opts.leakBound > 0 {
		bound = f.opts.leakBound
	}
	deadline := time.Now().Add(bound)
	ignore := append(append([]string(nil), poolGoroutines...), f.opts.IgnoreGoroutines...)
	for {
		left := labeledGoroutines(f.id, ignore)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			f.t.Errorf("asynctest: %d goroutine(s) of the fleet still run %v after it stopped (a handler that does not return, or starts a goroutine it does not end?):\n\n%s",
				len(left), bound, strings.Join(left, "\n\n"))
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// poolGoroutines are the functions of goroutines that belong to a pool
// outliving the handler that made them, not to the handler: net/http's
// keep-alive connections (of http.DefaultClient's Transport, say), which
// a handler's HTTP call starts and the Transport keeps for the next.
var poolGoroutines = []string{
	"net/http.(*persistConn).readLoop",
	"net/http.(*persistConn).writeLoop",
}

// labeledGoroutines returns the stacks, from the goroutine profile, of the
// goroutines labeled with the fleet id, but those whose top function or
// start function is in ignore.
func labeledGoroutines(id string, ignore []string) []string {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	want := strconv.Quote(LabelKey) + ":" + strconv.Quote(id)
	var out []string
	for _, rec := range strings.Split(b.String(), "\n\n") {
		for _, ln := range strings.Split(rec, "\n") {
			if strings.HasPrefix(ln, "# labels: ") && containsLabel(ln, want) {
				if top, start := stackEnds(rec); !slices.Contains(ignore, top) && !slices.Contains(ignore, start) {
					out = append(out, rec)
				}
				break
			}
		}
	}
	return out
}

// stackEnds returns the top function of a goroutine profile record (the
// first frame outside the runtime, as a stack trace shows it) and the
// function its goroutine was started with (the last frame but
// runtime.goexit).
func stackEnds(rec string) (top, start string) {
	for _, ln := range strings.Split(rec, "\n") {
		// "#\t0x4f2a1b\tnet/http.(*persistConn).readLoop+0x1f3\t/go/src/..."
		fields := strings.Split(ln, "\t")
		if len(fields) < 3 || fields[0] != "#" {
			continue
		}
		fn := fields[2]
		if i := strings.LastIndex(fn, "+0x"); i >= 0 {
			fn = fn[:i]
		}
		if fn == "runtime.goexit" {
			continue
		}
		if top == "" && !strings.HasPrefix(fn, "runtime.") {
			top = fn
		}
		start = fn
	}
	return top, start
}

// containsLabel reports whether the labels line holds want as a whole
// key-value pair.
func containsLabel(line, want string) bool {
	s := strings.TrimPrefix(line, "# labels: ")
	s = strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	i := strings.Index(s, want)
	for i >= 0 {
		end := i + len(want)
		if (i == 0 || s[i-1] == ',' || s[i-1] == ' ') && (end == len(s) || s[end] == ',') {
			return true
		}
		j := strings.Index(s[end:], want)
		if j < 0 {
			return false
		}
		i = end + j
	}
	return false
}
