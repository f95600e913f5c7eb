package upload_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/taskfleet/async/upload"
	"github.com/taskfleet/async/worker"
)

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestUploadToDirectory(t *testing.T) {
	root := t.TempDir()
	data := []byte(strings.Repeat("payload ", 1000))
	src := filepath.Join(root, "in", "a.bin")
	if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := upload.New(upload.Config{Roots: []string{root}})
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(root, "out", "sub", "a.bin")
	for _, d := range []string{dest, "file://" + dest} {
		r, err := h.Run(context.Background(), upload.Args{Src: src, Dest: d})
		if err != nil {
			t.Fatal(err)
		}
		if r.Bytes != int64(len(data)) || r.SHA256 != sum(data) {
			t.Fatalf("result %+v", r)
		}
		got, err := os.ReadFile(dest)
		if err != nil || string(got) != string(data) {
			t.Fatalf("copy differs (%v)", err)
		}
	}
	left, _ := filepath.Glob(filepath.Join(root, "out", "sub", ".*part*"))
	if len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestUploadHTTPPut(t *testing.T) {
	root := t.TempDir()
	data := []byte("hello over http")
	src := filepath.Join(root, "b.txt")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[string][]byte{}
	status := map[string]int{"/busy": http.StatusServiceUnavailable, "/bad": http.StatusBadRequest, "/boom": http.StatusInternalServerError}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		if code := status[r.URL.Path]; code != 0 {
			if code == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "7")
			}
			w.WriteHeader(code)
			return
		}
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got[r.URL.Path] = b
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	h, err := upload.New(upload.Config{Roots: []string{root}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r, err := h.Run(ctx, upload.Args{Src: src, Dest: srv.URL + "/store/b.txt"})
	if err != nil || r.Bytes != int64(len(data)) || r.SHA256 != sum(data) || string(got["/store/b.txt"]) != string(data) {
		t.Fatalf("PUT: %+v, %v; server got %q", r, err, got["/store/b.txt"])
	}
	var perm *worker.PermanentError
	var ra *worker.RetryAfterError
	if _, err := h.Run(ctx, upload.Args{Src: src, Dest: srv.URL + "/bad"}); !errors.As(err, &perm) {
		t.Errorf("400: %v, want a permanent error", err)
	}
	if _, err := h.Run(ctx, upload.Args{Src: src, Dest: srv.URL + "/boom"}); err == nil || errors.As(err, &perm) {
		t.Errorf("500: %v, want a retried error", err)
	}
	if _, err := h.Run(ctx, upload.Args{Src: src, Dest: srv.URL + "/busy"}); !errors.As(err, &ra) || ra.Delay.Seconds() != 7 {
		t.Errorf("503 with Retry-After: %v, want a retry after 7s", err)
	}
}

func TestUploadRefusesPathsOutsideRoots(t *testing.T) {
	root := t.TempDir()
	other := t.TempDir()
	src := filepath.Join(root, "c.txt")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := upload.New(upload.Config{Roots: []string{root}})
	if err != nil {
		t.Fatal(err)
	}
	var perm *worker.PermanentError
	for _, a := range []upload.Args{
		{Src: filepath.Join(other, "c.txt"), Dest: filepath.Join(root, "d")},
		{Src: src, Dest: filepath.Join(root, "..", filepath.Base(other), "d")},
		{Src: "relative.txt", Dest: filepath.Join(root, "d")},
		{Src: src, Dest: "ftp://example.invalid/x"},
		{Src: filepath.Join(root, "missing"), Dest: filepath.Join(root, "d")},
	} {
		if _, err := h.Run(context.Background(), a); !errors.As(err, &perm) {
			t.Errorf("%+v: %v, want a permanent error", a, err)
		}
	}
}
