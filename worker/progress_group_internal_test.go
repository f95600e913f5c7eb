package worker

import (
	"sync"
	"testing"
	"time"
)

// groupWrites records the group-only writes of a progress.
type groupWrites struct {
	mu   sync.Mutex
	got  [][3]int64 // done, total, n
	full int        // writes through write (task and group)
}

// A group's member that succeeds before its first write was due writes its
// total, done in full, to its group only; not when it failed, lost its
// lease, or reported no total; and a task outside a group writes nothing.
func TestProgressShortMemberWritesItsGroup(t *testing.T) {
	for _, c := range []struct {
		name     string
		member   bool
		ok, lost bool
		total    int64
		want     bool
	}{
		{"member succeeded", true, true, false, 300, true},
		{"member failed", true, false, false, 300, false},
		{"member lost", true, true, true, 300, false},
		{"member without a total", true, true, false, 0, false},
		{"not a member", false, true, false, 300, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var g groupWrites
			p := newProgress(nil)
			p.every = time.Hour
			p.write = func(done, total, n int64, last bool) {
				g.mu.Lock()
				g.full++
				g.mu.Unlock()
			}
			if c.member {
				p.writeGroup = func(done, total, n int64) {
					g.mu.Lock()
					g.got = append(g.got, [3]int64{done, total, n})
					g.mu.Unlock()
				}
			}
			p.begin(time.Now())
			p.report(c.total/3, c.total)
			p.finish(time.Now(), c.ok, c.lost)
			g.mu.Lock()
			defer g.mu.Unlock()
			if g.full != 0 {
				t.Fatalf("%d writes to the task's hash, want none", g.full)
			}
			switch {
			case c.want && (len(g.got) != 1 || g.got[0] != [3]int64{c.total, c.total, 1}):
				t.Fatalf("group writes %v, want one of %d/%d (n 1)", g.got, c.total, c.total)
			case !c.want && len(g.got) != 0:
				t.Fatalf("group writes %v, want none", g.got)
			}
		})
	}
}
