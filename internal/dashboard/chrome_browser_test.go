package dashboard_test

// The browser of the browser tests: Debian's chromium, headless, driven
// through the DevTools protocol (chromedp over a pipe), one per test that
// needs it, with a tab per subtest whose listener records what a user's
// developer tools would show: console errors, uncaught exceptions, failed
// or refused requests, dialogs, and every request with its time.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/taskfleet/async/internal/testenv"
)

// envChromium names the environment variable holding the browser's path;
// without it the tests look for chromium, then chromium-browser, in PATH.
const envChromium = "ASYNC_CHROMIUM"

// chromiumPath returns the browser to start. Without one, the test fails
// in CI (CI=true) and on a real Redis, where .ci/run installs it and
// nothing may skip, and skips elsewhere (a developer's machine without a
// browser still runs the rest of the suite).
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(envChromium); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no chromium in PATH (install Debian's: apt-get install -y chromium; or set " + envChromium + ")"
	if os.Getenv("CI") == "true" || testenv.Real() {
		t.Fatal(msg + ": the browser tests must run in CI and on a real Redis")
	}
	t.Skip(msg)
	return ""
}

// browserTimeout bounds every wait on the browser (a page load, a poll of
// the DOM): generous, as the machine may be busy; a wait ends as soon as
// its condition holds.
const browserTimeout = 30 * time.Second

// browser is one headless chromium of a test.
type browser struct {
	ctx context.Context // the browser's context: tabs are made from it
	pid int
	dir string // its --user-data-dir
}

// startBrowser starts chromium for t, stopped when t ends: the allocator's
// cancel kills the process it started and waits for it; the cleanup then
// checks that no process of this browser (its user data directory is on
// every one's command line) is left.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromiumPath(t)
	dir := t.TempDir() // removed after the browser's cleanup below ran
	var out syncBuffer
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		// This machine's network is closed: without these the browser's
		// own background requests fail and slow it down.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("password-store", "basic"),
		chromedp.UserDataDir(dir),
		chromedp.WindowSize(1280, 800),
		chromedp.CombinedOutput(&out),
	)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	started := time.Now()
	if err := chromedp.Do(bctx); err != nil {
		cancelBrowser()
		cancelAlloc()
		t.Fatalf("starting %s: %v\n%s", path, err, out.String())
	}
	b := &browser{ctx: bctx, dir: dir}
	if p := chromedp.FromContext(bctx).Browser.Process(); p != nil {
		b.pid = p.Pid
	}
	t.Logf("browser %s (pid %d) started in %v", path, b.pid, time.Since(started).Round(time.Millisecond))
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc() // waits for the process to exit
		if b.pid != 0 {
			if err := syscall.Kill(b.pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("browser pid %d still exists after its allocator was cancelled (kill: %v)", b.pid, err)
			}
		}
		// Its helper processes (zygote, renderers, network service) end
		// with it; wait for them, bounded, and kill those left (they are
		// ours: they carry our user data directory) so that the test does
		// not leave any, but fail then.
		deadline := time.Now().Add(10 * time.Second)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for left := processesUsing(dir); len(left) > 0; left = processesUsing(dir) {
			if time.Now().After(deadline) {
				for _, pid := range left {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
				t.Errorf("browser processes %v still ran 10 s after the browser was stopped; killed them", left)
				return
			}
			<-tick.C
		}
	})
	return b
}

// processesUsing returns the pids of the processes started with
// --user-data-dir=dir.
func processesUsing(dir string) []int {
	want := []byte("--user-data-dir=" + dir)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, arg := range bytes.Split(cmd, []byte{0}) {
			if bytes.Equal(arg, want) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// syncBuffer is the browser's output, kept for a failure to start.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 64<<10 {
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// request is one request a tab sent.
type request struct {
	URL    string
	Method string
	Type   network.ResourceType
	At     float64 // the browser's monotonic clock, seconds
}

// tab is a browser tab with what its listener saw.
type tab struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	problems []string  // what a developer would see in red
	requests []request // every request, in order
	dialogs  []string  // alert, confirm, prompt
}

// alertSpy runs in every document before the page's own scripts: it
// counts the calls of alert, confirm and prompt (a script that got in
// would call one) in window.__dialogs instead of opening a dialog.
const alertSpy = `(function(){var d=[];Object.defineProperty(window,"__dialogs",{value:d});` +
	`["alert","confirm","prompt"].forEach(function(n){var f=window[n];window[n]=function(m){d.push(n+": "+String(m));` +
	`return n==="confirm"?(window.__confirm!==undefined?window.__confirm:true):(n==="prompt"?null:undefined);};});})();`

// newTab opens a tab on b for t, closed when t ends. Its listener is in
// place before the tab's first event.
func (b *browser) newTab(t *testing.T) *tab {
	t.Helper()
	tb := &tab{t: t}
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithListener(tb.listen))
	tb.ctx = ctx
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, cdplog.Enable, cdp.Empty{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: alertSpy})
		return err
	})); err != nil {
		t.Fatalf("new tab: %v", err)
	}
	return tb
}

// listen runs in the tab's event loop: it only records (and has a dialog
// dismissed from another goroutine, as one would block the page).
func (tb *tab) listen(ev any) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range ev.Args {
				if a.Description != "" {
					args = append(args, a.Description)
				} else {
					args = append(args, string(a.Value))
				}
			}
			tb.problems = append(tb.problems, "console."+string(ev.Type)+": "+strings.Join(args, " "))
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg += " " + d.Exception.Description
		}
		tb.problems = append(tb.problems, fmt.Sprintf("uncaught exception at %s:%d: %s", d.URL, d.LineNumber+1, msg))
	case *cdplog.EventEntryAdded:
		// The browser's own messages: a Content-Security-Policy
		// violation, a resource that failed to load.
		if e := ev.Entry; e != nil && e.Level == cdplog.EntryLevelError {
			tb.problems = append(tb.problems, fmt.Sprintf("console (%s): %s %s", e.Source, e.Text, e.URL))
		}
	case *network.EventRequestWillBeSent:
		if ev.Request != nil {
			tb.requests = append(tb.requests, request{URL: ev.Request.URL, Method: ev.Request.Method, Type: ev.Type, At: ev.Timestamp.Float64()})
		}
	case *network.EventLoadingFailed:
		// A request that the tab itself abandoned (a poll in flight
		// when the test navigates away) is not the page's failure; one
		// that was blocked (by the CSP, say) is.
		if ev.Canceled && ev.BlockedReason == "" {
			return
		}
		tb.problems = append(tb.problems, fmt.Sprintf("request %s failed: %s %s", ev.RequestID, ev.ErrorText, ev.BlockedReason))
	case *network.EventResponseReceived:
		if r := ev.Response; r != nil && r.Status >= 400 {
			tb.problems = append(tb.problems, fmt.Sprintf("HTTP %d for %s", r.Status, r.URL))
		}
	case *page.EventJavascriptDialogOpening:
		tb.dialogs = append(tb.dialogs, string(ev.Type)+": "+ev.Message)
		go func() {
			_, _ = chromedp.Call(tb.ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}()
	}
}

// checkClean fails the test with every problem the tab recorded since the
// last check (what), and forgets them.
func (tb *tab) checkClean(what string) {
	tb.t.Helper()
	tb.mu.Lock()
	ps, ds := tb.problems, tb.dialogs
	tb.problems, tb.dialogs = nil, nil
	tb.mu.Unlock()
	for _, p := range ps {
		tb.t.Errorf("%s: %s", what, p)
	}
	for _, d := range ds {
		tb.t.Errorf("%s: a dialog opened: %s", what, d)
	}
}

// requestsSince returns the requests recorded from index i on, and the
// index to continue from.
func (tb *tab) requestsSince(i int) ([]request, int) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if i > len(tb.requests) {
		i = len(tb.requests)
	}
	return append([]request(nil), tb.requests[i:]...), len(tb.requests)
}

// do runs actions in the tab, failing the test on an error.
func (tb *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.t.Fatalf("%s: %v", what, err)
	}
}

// open navigates to u and checks the answer's status.
func (tb *tab) open(u string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserTimeout)
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(u))
	if err != nil {
		tb.t.Fatalf("open %s: %v", u, err)
	}
	if resp == nil || resp.Status != 200 {
		tb.t.Fatalf("open %s: %+v, want 200", u, resp)
	}
}

// submit clicks the button sel (a real click, at its place on the screen)
// and waits for the page the form's answer leads to to load.
func (tb *tab) submit(what, sel string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel))); err != nil {
		tb.t.Fatalf("%s: %s not visible: %v", what, sel, err)
	}
	if _, err := chromedp.Run(ctx, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))); err != nil {
		tb.t.Fatalf("%s: click %s: %v", what, sel, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](tb *tab, expr string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		tb.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS waits, bounded by browserTimeout, until the JavaScript expression
// cond is true in the page (the page polls it itself, every 50 ms).
func (tb *tab) waitJS(what, cond string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, browserTimeout+5*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(browserTimeout))); err != nil {
		tb.t.Fatalf("waiting for %s (%s): %v", what, cond, err)
	}
}
