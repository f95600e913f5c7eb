package asynctest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// ErrSkipped is what Standalone returns when fn skipped (t.Skip), for
// instance when Fleet.Advance found a real Redis.
var ErrSkipped = errors.New("asynctest: skipped")

// Standalone runs fn with a testing.TB of its own, for code that is not a
// test but wants the kit: Examples, a playground main, a tool that starts
// a throwaway fleet. fn runs on a goroutine of its own, as a test does;
// t.Fatal and t.FailNow end it; t.Cleanup functions run once it returned,
// the last registered first. Standalone returns nil when nothing failed,
// ErrSkipped when fn skipped, else an error holding every message logged
// (t.Log, t.Error, t.Fatal...).
func Standalone(name string, fn func(t testing.TB)) error {
	ctx, cancel := context.WithCancel(context.Background())
	t := &standaloneTB{name: name, ctx: ctx}
	t.run(fn)
	cancel() // as a test's: done just before its cleanups run
	for {
		t.mu.Lock()
		n := len(t.cleanups)
		if n == 0 {
			t.mu.Unlock()
			break
		}
		c := t.cleanups[n-1]
		t.cleanups = t.cleanups[:n-1]
		t.mu.Unlock()
		t.run(func(testing.TB) { c() })
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.failed:
		return fmt.Errorf("asynctest: %s failed:\n%s", name, strings.TrimRight(t.log.String(), "\n"))
	case t.skipped:
		return fmt.Errorf("%w: %s", ErrSkipped, strings.TrimRight(t.log.String(), "\n"))
	}
	return nil
}

// standaloneTB is Standalone's testing.TB. The embedded TB is nil: it is
// there for the interface's unexported method, and every exported one is
// defined below.
type standaloneTB struct {
	testing.TB

	name string
	ctx  context.Context

	mu       sync.Mutex
	log      strings.Builder
	failed   bool
	skipped  bool
	cleanups []func()
}

var _ testing.TB = (*standaloneTB)(nil)

// run calls fn(t) on a goroutine of its own and waits for it: FailNow and
// SkipNow end that goroutine (runtime.Goexit), as they end a test's.
func (t *standaloneTB) run(fn func(testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(t)
	}()
	<-done
}

func (t *standaloneTB) logf(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.log.WriteString(fmt.Sprintf(format, args...))
	t.log.WriteByte('\n')
}

func (t *standaloneTB) ArtifactDir() string { return t.TempDir() }
func (t *standaloneTB) Attr(key, value string) {
	t.logf("=== ATTR %s %s %s", t.name, key, value)
}
func (t *standaloneTB) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}
func (t *standaloneTB) Error(args ...any) { t.logf("%s", fmt.Sprint(args...)); t.Fail() }
func (t *standaloneTB) Errorf(format string, args ...any) {
	t.logf(format, args...)
	t.Fail()
}
func (t *standaloneTB) Fail() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failed = true
}
func (t *standaloneTB) FailNow() { t.Fail(); runtime.Goexit() }
func (t *standaloneTB) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}
func (t *standaloneTB) Fatal(args ...any) { t.logf("%s", fmt.Sprint(args...)); t.FailNow() }
func (t *standaloneTB) Fatalf(format string, args ...any) {
	t.logf(format, args...)
	t.FailNow()
}
func (t *standaloneTB) Helper()                          {}
func (t *standaloneTB) Log(args ...any)                  { t.logf("%s", fmt.Sprint(args...)) }
func (t *standaloneTB) Logf(format string, args ...any)  { t.logf(format, args...) }
func (t *standaloneTB) Name() string                     { return t.name }
func (t *standaloneTB) Skip(args ...any)                 { t.logf("%s", fmt.Sprint(args...)); t.SkipNow() }
func (t *standaloneTB) Skipf(format string, args ...any) { t.logf(format, args...); t.SkipNow() }
func (t *standaloneTB) SkipNow() {
	t.mu.Lock()
	t.skipped = true
	t.mu.Unlock()
	runtime.Goexit()
}
func (t *standaloneTB) Skipped() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.skipped
}
func (t *standaloneTB) Context() context.Context { return t.ctx }
func (t *standaloneTB) Output() io.Writer        { return standaloneOut{t} }

func (t *standaloneTB) TempDir() string {
	dir, err := os.MkdirTemp("", "asynctest-")
	if err != nil {
		t.Fatalf("TempDir: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func (t *standaloneTB) Setenv(key, value string) {
	old, had := os.LookupEnv(key)
	if err := os.Setenv(key, value); err != nil {
		t.Fatalf("Setenv: %v", err)
	}
	t.Cleanup(func() {
		if had {
			_ = os.Setenv(key, old)
		} else {
			_ = os.Unsetenv(key)
		}
	})
}

func (t *standaloneTB) Chdir(dir string) {
	old, err := os.Getwd()
	if err != nil {
		t.Fatalf("Chdir: %v", err)
	}
	if err := os.Chdir(dir); err != nil {
		t.Fatalf("Chdir: %v", err)
	}
	t.Cleanup(func() { _ = os.Chdir(old) })
}

// standaloneOut is the writer of Output: what is written joins the log.
type standaloneOut struct{ t *standaloneTB }

func (o standaloneOut) Write(p []byte) (int, error) {
	o.t.mu.Lock()
	defer o.t.mu.Unlock()
	o.t.log.Write(p)
	return len(p), nil
}
