package asynctest

import (
	"context"
	"strings"
	"testing"

	"github.com/taskfleet/async/client"
)

// Mail is an email to send.
type Mail struct{ To string }

func (Mail) Kind() string { return "kit.mail" }

// A task enqueued twice under one ID counts once: the second call's entry
// (a duplicate, which added nothing) matches only with Want.Duplicates.
func TestWantSkipsDuplicates(t *testing.T) {
	t.Parallel()
	f := NewFleet(t, nil, nil)
	ctx := context.Background()
	for range 2 {
		if _, err := f.Client().Enqueue(ctx, Mail{To: "ann"}, &client.EnqueueOpts{ID: "mail-ann"}); err != nil {
			t.Fatal(err)
		}
	}
	if e := RequireEnqueued(f, Mail{To: "ann"}, &Want{Count: 1}); e.Duplicate {
		t.Errorf("matched the duplicate's entry %+v", e)
	}
	RequireEnqueued(f, Mail{To: "ann"}, &Want{Count: 2, Duplicates: true})
	RequireEnqueuedKind(f, Mail{}.Kind(), &Want{Count: 1, ID: "default/mail-ann"})
	RequireNotEnqueuedArgs(f, Mail{To: "bob"}, nil)
}

// RequireNotEnqueued leaves duplicates out unless Want.Duplicates is set;
// RequireNotEnqueuedArgs fails when a task with those args was enqueued,
// naming it.
func TestRequireNotEnqueuedArgs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		body func(f *Fleet)
		want string // in the failure, "" for none
	}{
		{"bob", func(f *Fleet) { RequireNotEnqueuedArgs(f, Mail{To: "bob"}, nil) }, `wanted no task of kind "kit.mail" with args`},
		{"carl", func(f *Fleet) { RequireNotEnqueuedArgs(f, Mail{To: "carl"}, nil) }, ""},
		{"bob elsewhere", func(f *Fleet) { RequireNotEnqueuedArgs(f, Mail{To: "bob"}, &Want{Queue: "other"}) }, ""},
		{"duplicates", func(f *Fleet) { RequireNotEnqueued(f, Mail{}.Kind(), &Want{ID: "default/mail-ann", Duplicates: true}) }, "2 were enqueued"},
	} {
		tb := newFakeTB(t, t.Name()+"/"+tc.name)
		tb.run(func(tb testing.TB) {
			f := NewFleet(tb, nil, &Options{Embedded: true})
			ctx := context.Background()
			if _, err := f.Client().Enqueue(ctx, Mail{To: "bob"}, nil); err != nil {
				tb.Fatal(err)
			}
			if _, err := f.Client().Enqueue(ctx, Mail{To: "ann"}, &client.EnqueueOpts{ID: "mail-ann"}); err != nil {
				tb.Fatal(err)
			}
			// Found there already: only this call's entry is a duplicate.
			if _, err := f.Client().Enqueue(ctx, Mail{To: "ann"}, &client.EnqueueOpts{ID: "mail-ann"}); err != nil {
				tb.Fatal(err)
			}
			RequireNotEnqueued(f, Mail{}.Kind(), &Want{ID: "default/mail-ann", Queue: "other"})
			tc.body(f)
		})
		errs := tb.failures()
		switch {
		case tc.want == "" && len(errs) != 0:
			t.Errorf("%s: failures %q, want none", tc.name, errs)
		case tc.want != "" && (len(errs) != 1 || !strings.Contains(errs[0], tc.want)):
			t.Errorf("%s: failures %q, want one saying %q", tc.name, errs, tc.want)
		}
	}
}
