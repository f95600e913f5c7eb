package asynctest

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/taskfleet/async/client"
)

// Want narrows which enqueued tasks an assertion matches: every field set
// must match; fields left zero match anything. A nil *Want matches every
// task of the kind.
//
// The fields are compared with the task as it was sent (client.Enqueued):
// Queue with its queue (the client's default applied), MaxAttempts with its
// attempts (the default applied), Meta with the metadata it carries (the
// entries inherited from the handler that enqueued it too), Delay,
// ProcessAt, Deadline and Timeout with the options the caller gave.
type Want struct {
	Queue        string
	ID           string
	Parent       string // the task whose handler enqueued it
	Continues    string // the task or group it continues
	Group        string // the group it is a member of
	MaxAttempts  int
	Delay        time.Duration
	ProcessAt    time.Time
	Deadline     time.Time
	Timeout      time.Duration
	RateKey      string
	PartitionKey string
	Meta         map[string]string // entries the task's metadata must hold
	// Count, when set, is how many tasks must match exactly; 0 means at
	// least one.
	Count int
	// Duplicates makes the entries of calls that found their task there
	// already (client.Enqueued.Duplicate: the same ID enqueued again,
	// which added nothing) match too. Left false, they never match: a
	// task enqueued twice under one ID counts once, for Count and for
	// RequireNotEnqueued.
	Duplicates bool
}

// String describes the fields of w that are set, as a Go literal would.
func (w *Want) String() string {
	if w == nil {
		return "any"
	}
	var parts []string
	add := func(set bool, name string, v any) {
		if set {
			parts = append(parts, fmt.Sprintf("%s: %#v", name, v))
		}
	}
	add(w.Queue != "", "Queue", w.Queue)
	add(w.ID != "", "ID", w.ID)
	add(w.Parent != "", "Parent", w.Parent)
	add(w.Continues != "", "Continues", w.Continues)
	add(w.Group != "", "Group", w.Group)
	add(w.MaxAttempts != 0, "MaxAttempts", w.MaxAttempts)
	if w.Delay != 0 {
		parts = append(parts, "Delay: "+w.Delay.String())
	}
	add(!w.ProcessAt.IsZero(), "ProcessAt", w.ProcessAt.String())
	add(!w.Deadline.IsZero(), "Deadline", w.Deadline.String())
	if w.Timeout != 0 {
		parts = append(parts, "Timeout: "+w.Timeout.String())
	}
	add(w.RateKey != "", "RateKey", w.RateKey)
	add(w.PartitionKey != "", "PartitionKey", w.PartitionKey)
	add(len(w.Meta) > 0, "Meta", w.Meta)
	add(w.Count != 0, "Count", w.Count)
	add(w.Duplicates, "Duplicates", w.Duplicates)
	if len(parts) == 0 {
		return "any"
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// differs returns why e does not match w (the first field that differs,
// with both values), or "" when it matches. Count is not looked at.
func (w *Want) differs(e client.Enqueued) string {
	if e.Duplicate && (w == nil || !w.Duplicates) {
		return "a duplicate (it added nothing; Want.Duplicates unset)"
	}
	if w == nil {
		return ""
	}
	o := e.Opts
	if o == nil {
		o = &client.EnqueueOpts{Queue: e.Queue}
	}
	str := func(name, want, got string) string {
		if want != "" && want != got {
			return fmt.Sprintf("%s is %q, want %q", name, got, want)
		}
		return ""
	}
	for _, d := range []string{
		str("Queue", w.Queue, e.Queue),
		str("ID", w.ID, e.ID),
		str("Parent", w.Parent, e.Parent),
		str("Continues", w.Continues, e.Continues),
		str("Group", w.Group, e.Group),
		str("RateKey", w.RateKey, o.RateKey),
		str("PartitionKey", w.PartitionKey, o.PartitionKey),
	} {
		if d != "" {
			return d
		}
	}
	switch {
	case w.MaxAttempts != 0 && w.MaxAttempts != o.MaxAttempts:
		return fmt.Sprintf("MaxAttempts is %d, want %d", o.MaxAttempts, w.MaxAttempts)
	case w.Delay != 0 && w.Delay != o.Delay:
		return fmt.Sprintf("Delay is %v, want %v", o.Delay, w.Delay)
	case !w.ProcessAt.IsZero() && !w.ProcessAt.Equal(o.ProcessAt):
		return fmt.Sprintf("ProcessAt is %s, want %v", timeOrUnset(o.ProcessAt), w.ProcessAt)
	case !w.Deadline.IsZero() && !w.Deadline.Equal(o.Deadline):
		return fmt.Sprintf("Deadline is %s, want %v", timeOrUnset(o.Deadline), w.Deadline)
	case w.Timeout != 0 && w.Timeout != o.Timeout:
		return fmt.Sprintf("Timeout is %v, want %v", o.Timeout, w.Timeout)
	}
	for _, k := range sortedKeys(w.Meta) {
		got, ok := o.Meta[k]
		switch {
		case !ok:
			return fmt.Sprintf("Meta has no %q (want %q); it holds %v", k, w.Meta[k], o.Meta)
		case got != w.Meta[k]:
			return fmt.Sprintf("Meta[%q] is %q, want %q", k, got, w.Meta[k])
		}
	}
	return ""
}

func timeOrUnset(t time.Time) string {
	if t.IsZero() {
		return "unset"
	}
	return t.String()
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// describe prints one enqueued task for a failure message.
func describe(e client.Enqueued) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (queue %s) args %s", e.ID, e.Queue, argsString(e.Args))
	if e.Duplicate {
		b.WriteString(" [duplicate]")
	}
	if e.Parent != "" {
		b.WriteString(" parent " + e.Parent)
	}
	if e.Continues != "" {
		b.WriteString(" continues " + e.Continues)
	}
	if e.Group != "" {
		b.WriteString(" group " + e.Group)
	}
	return b.String()
}

// argsString prints args as a Go value, through a pointer too.
func argsString(a client.Args) string {
	v := reflect.ValueOf(a)
	if v.Kind() == reflect.Pointer && !v.IsNil() {
		return fmt.Sprintf("&%+v", v.Elem().Interface())
	}
	return fmt.Sprintf("%+v", a)
}

// argsEqual compares enqueued args with want: with reflect.DeepEqual, on
// the values when either is a pointer (a task enqueued with &A{...} equals
// a want of A{...}, and the other way round).
func argsEqual(got, want any) bool {
	return reflect.DeepEqual(deref(got), deref(want))
}

func deref(x any) any {
	v := reflect.ValueOf(x)
	for v.IsValid() && v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return x
		}
		v = v.Elem()
	}
	if !v.IsValid() {
		return nil
	}
	return v.Interface()
}

// ofKind returns the recorded tasks of kind, in order.
func (f *Fleet) ofKind(kind string) []client.Enqueued {
	var out []client.Enqueued
	for _, e := range f.rec.snapshot() {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// kindsLine lists the kinds enqueued, with how many of each, in the order
// first seen.
func (f *Fleet) kindsLine() string {
	n := map[string]int{}
	var kinds []string
	for _, e := range f.rec.snapshot() {
		if n[e.Kind] == 0 {
			kinds = append(kinds, e.Kind)
		}
		n[e.Kind]++
	}
	if len(kinds) == 0 {
		return "none"
	}
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%s (%d)", k, n[k])
	}
	return strings.Join(parts, ", ")
}

// match returns the tasks of kind that match w (and, when args is set,
// whose args equal *args), and a failure message when none (or not Count)
// do: what was wanted, and each task of the kind with why it differs.
func (f *Fleet) match(kind string, args *any, w *Want) ([]client.Enqueued, string) {
	all := f.ofKind(kind)
	var hit []client.Enqueued
	whys := make([]string, len(all))
	for i, e := range all {
		why := w.differs(e)
		if why == "" && args != nil && !argsEqual(e.Args, *args) {
			why = "args differ"
		}
		whys[i] = why
		if why == "" {
			hit = append(hit, e)
		}
	}
	wantCount := 0
	if w != nil {
		wantCount = w.Count
	}
	if wantCount == 0 && len(hit) > 0 || wantCount > 0 && len(hit) == wantCount {
		return hit, ""
	}
	var b strings.Builder
	b.WriteString("asynctest: wanted ")
	if wantCount > 0 {
		fmt.Fprintf(&b, "exactly %d task(s)", wantCount)
	} else {
		b.WriteString("a task")
	}
	fmt.Fprintf(&b, " of kind %q", kind)
	if args != nil {
		fmt.Fprintf(&b, " with args %s", argsString(toArgs(*args)))
	}
	fmt.Fprintf(&b, " matching %s", w)
	if len(all) == 0 {
		fmt.Fprintf(&b, "; nothing of kind %q was enqueued; enqueued kinds: %s", kind, f.kindsLine())
		return hit, b.String()
	}
	fmt.Fprintf(&b, "; %d matched. Enqueued of kind %q:", len(hit), kind)
	for i, e := range all {
		fmt.Fprintf(&b, "\n\t%s", describe(e))
		if whys[i] == "" {
			b.WriteString(": matches")
		} else {
			b.WriteString(": " + whys[i])
		}
	}
	return hit, b.String()
}

func toArgs(a any) client.Args {
	if c, ok := a.(client.Args); ok {
		return c
	}
	return nil
}

// RequireEnqueued fails the test unless a task of A's kind with args equal
// to want, and matching w, was enqueued through the fleet's clients; it
// returns the first such task. Args are compared with reflect.DeepEqual,
// on the values when A or the enqueued args are pointers. With w.Count
// set, exactly that many tasks must match. The failure message says what
// was wanted and lists every task of the kind that was enqueued, with its
// id, queue, args and the field that differed (or, when none was, the
// kinds that were).
func RequireEnqueued[A client.Args](f *Fleet, want A, w *Want) client.Enqueued {
	f.t.Helper()
	kind := want.Kind()
	var a any = want
	hit, msg := f.match(kind, &a, w)
	if msg != "" {
		f.t.Fatalf("%s", msg)
		return client.Enqueued{}
	}
	return hit[0]
}

// RequireEnqueuedKind fails the test unless a task of kind matching w was
// enqueued (its args not compared); it returns the matching tasks, in
// order. Its failure message is RequireEnqueued's.
func RequireEnqueuedKind(f *Fleet, kind string, w *Want) []client.Enqueued {
	f.t.Helper()
	hit, msg := f.match(kind, nil, w)
	if msg != "" {
		f.t.Fatalf("%s", msg)
		return nil
	}
	return hit
}

// RequireNotEnqueued fails the test if a task of kind matching w was
// enqueued (w.Count is not looked at), listing those tasks. Duplicates'
// entries are not looked at unless w.Duplicates is set.
func RequireNotEnqueued(f *Fleet, kind string, w *Want) {
	f.t.Helper()
	requireNot(f, kind, nil, w)
}

// RequireNotEnqueuedArgs fails the test if a task of A's kind with args
// equal to want (compared as RequireEnqueued does) and matching w was
// enqueued, listing those tasks: "no email to bob", when other emails
// were sent.
func RequireNotEnqueuedArgs[A client.Args](f *Fleet, want A, w *Want) {
	f.t.Helper()
	var a any = want
	requireNot(f, want.Kind(), &a, w)
}

func requireNot(f *Fleet, kind string, args *any, w *Want) {
	f.t.Helper()
	var hit []client.Enqueued
	for _, e := range f.ofKind(kind) {
		if w.differs(e) == "" && (args == nil || argsEqual(e.Args, *args)) {
			hit = append(hit, e)
		}
	}
	if len(hit) == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "asynctest: wanted no task of kind %q", kind)
	if args != nil {
		fmt.Fprintf(&b, " with args %s", argsString(toArgs(*args)))
	}
	fmt.Fprintf(&b, " matching %s; %d were enqueued:", w, len(hit))
	for _, e := range hit {
		fmt.Fprintf(&b, "\n\t%s", describe(e))
	}
	f.t.Fatalf("%s", b.String())
}

// EnqueuedArgs returns the args of every task of A's kind enqueued so far,
// in order (duplicates too). Args enqueued as a *A are dereferenced (and
// those as an A are addressed, when A is a pointer type); args of the kind
// of another Go type are left out.
func EnqueuedArgs[A client.Args](f *Fleet) []A {
	var zero A
	kind := kindOf(zero)
	var out []A
	for _, e := range f.ofKind(kind) {
		if a, ok := asArgs[A](e.Args); ok {
			out = append(out, a)
		}
	}
	return out
}

// kindOf is the kind of A's values: A's zero value's Kind, or, when A is a
// pointer type whose zero value is nil, that of a new value.
func kindOf[A client.Args](zero A) string {
	t := reflect.TypeFor[A]()
	if t.Kind() == reflect.Pointer {
		return reflect.New(t.Elem()).Interface().(client.Args).Kind()
	}
	return zero.Kind()
}

// asArgs converts recorded args to an A, through one pointer either way.
func asArgs[A client.Args](x client.Args) (A, bool) {
	if a, ok := x.(A); ok {
		return a, true
	}
	var zero A
	t := reflect.TypeFor[A]()
	v := reflect.ValueOf(x)
	switch {
	case !v.IsValid():
	case v.Kind() == reflect.Pointer && !v.IsNil() && v.Elem().Type() == t:
		return v.Elem().Interface().(A), true
	case t.Kind() == reflect.Pointer && v.Type() == t.Elem():
		p := reflect.New(t.Elem())
		p.Elem().Set(v)
		return p.Interface().(A), true
	}
	return zero, false
}
