package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/taskfleet/async/worker"
)

// source is what an upload reads: a local file (read by offset, as many
// times as needed) or the body of an http(s) GET (read once, in order).
type source struct {
	name string // for errors: the path or URL
	size int64  // -1 when not known (a chunked reply)
	fp   string // fingerprint: what must be equal for the bytes to be

	file *os.File // a local file, or
	body io.ReadCloser
	// off is where body starts in the source (a ranged GET of a resume).
	off int64
}

func (s *source) Close() error {
	if s.file != nil {
		return s.file.Close()
	}
	if s.body != nil {
		return s.body.Close()
	}
	return nil
}

// fileFingerprint is a file's size, modification time and inode.
func fileFingerprint(st os.FileInfo) string {
	var ino uint64
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		ino = sys.Ino
	}
	return fmt.Sprintf("file:%d:%d:%d", st.Size(), st.ModTime().UnixNano(), ino)
}

// openFile opens the local file p.
func openFile(p string) (*source, error) {
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return nil, worker.Permanent(fmt.Errorf("source %s: %w", p, err))
		}
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, worker.Permanent(fmt.Errorf("source %s: not a regular file", p))
	}
	return &source{name: p, size: st.Size(), fp: fileFingerprint(st), file: f}, nil
}

// check reports errSourceChanged when a file source's size, modification
// time or inode differs from when it was opened. One stat of its path does
// it: a file replaced by a rename (or removed) shows another inode (or
// none), and while the path names the open file, the path's stat is the
// open file's. (With the fstat at open, two stats per upload.)
func (s *source) check() error {
	if s.file == nil {
		return nil
	}
	st, err := os.Stat(s.name)
	if err != nil {
		return fmt.Errorf("source %s: %w (%v)", s.name, errSourceChanged, err)
	}
	if fp := fileFingerprint(st); fp != s.fp {
		return fmt.Errorf("source %s: %w (was %s, now %s)", s.name, errSourceChanged, s.fp, fp)
	}
	return nil
}

// httpFingerprint is what identifies the bytes of a reply: its strong ETag,
// else its Last-Modified, with its length.
func httpFingerprint(resp *http.Response) string {
	v := ""
	if et := resp.Header.Get("ETag"); et != "" && !isWeak(et) {
		v = "etag:" + et
	} else if lm := resp.Header.Get("Last-Modified"); lm != "" {
		v = "lm:" + lm
	}
	if v == "" {
		return "" // nothing to compare: a resume re-reads and compares the parts' MD5s
	}
	return "http:" + v + ":" + strconv.FormatInt(fullLength(resp), 10)
}

func isWeak(etag string) bool { return len(etag) > 1 && etag[:2] == "W/" }

// fullLength is the whole resource's length from a reply: Content-Length of
// a 200, the total of a 206's Content-Range; -1 when not known.
func fullLength(resp *http.Response) int64 {
	if resp.StatusCode == http.StatusPartialContent {
		cr := resp.Header.Get("Content-Range")
		var a, b, n int64
		if _, err := fmt.Sscanf(cr, "bytes %d-%d/%d", &a, &b, &n); err == nil {
			return n
		}
		return -1
	}
	return resp.ContentLength
}

// openHTTP starts the GET of u. From offset from on (> 0: a resume that
// may skip what is stored) it asks for a range, if the fingerprint fp of
// the earlier attempt names a strong ETag: If-Range makes the server send
// the whole resource when it changed, which the caller sees as off 0 and a
// new fingerprint.
func (h *Handler) openHTTP(ctx context.Context, u string, from int64, fp string) (*source, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return nil, worker.Permanent(fmt.Errorf("source %q: %w", u, err))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, worker.Permanent(fmt.Errorf("source %q: %w", u, err))
	}
	etag := ""
	if len(fp) > len("http:etag:") && fp[:len("http:etag:")] == "http:etag:" {
		etag = fp[len("http:etag:"):]
		if i := lastColon(etag); i >= 0 {
			etag = etag[:i]
		}
	}
	if from > 0 && etag != "" {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(from, 10)+"-")
		req.Header.Set("If-Range", etag)
	}
	if err := h.rate.Wait(ctx, rateKey("http", pu.Host), 1); err != nil {
		return nil, err
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("source GET %s: %w", u, err)
	}
	switch {
	case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent:
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		err := fmt.Errorf("source GET %s: %s", u, resp.Status)
		switch {
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable:
			if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
				return nil, worker.RetryAfter(d, err)
			}
			return nil, err
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusRequestTimeout:
			return nil, err
		default:
			return nil, worker.Permanent(err)
		}
	}
	s := &source{name: u, size: fullLength(resp), fp: httpFingerprint(resp), body: resp.Body}
	if resp.StatusCode == http.StatusPartialContent {
		var a, b, n int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &a, &b, &n); err != nil || a != from {
			resp.Body.Close()
			return nil, fmt.Errorf("source GET %s: range reply %q, asked from %d", u, resp.Header.Get("Content-Range"), from)
		}
		s.off = from
	}
	return s, nil
}

func lastColon(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ':' {
			return i
		}
	}
	return -1
}
