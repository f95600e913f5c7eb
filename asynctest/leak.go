package asynctest

import (
	"bytes"
	"runtime/pprof"
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
// for like the others.)
func (f *Fleet) checkLeaks() {
	bound := leakBound
	if f.opts.leakBound > 0 {
		bound = f.opts.leakBound
	}
	deadline := time.Now().Add(bound)
	for {
		left := labeledGoroutines(f.id)
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

// labeledGoroutines returns the stacks, from the goroutine profile, of the
// goroutines labeled with the fleet id.
func labeledGoroutines(id string) []string {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
	want := strconv.Quote(LabelKey) + ":" + strconv.Quote(id)
	var out []string
	for _, rec := range strings.Split(b.String(), "\n\n") {
		for _, ln := range strings.Split(rec, "\n") {
			if strings.HasPrefix(ln, "# labels: ") && containsLabel(ln, want) {
				out = append(out, rec)
				break
			}
		}
	}
	return out
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
