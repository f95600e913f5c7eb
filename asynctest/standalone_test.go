package asynctest_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/taskfleet/async/asynctest"
)

func TestStandalonePassesAndRunsCleanupsInReverse(t *testing.T) {
	var order []string
	var ctxDone bool
	err := asynctest.Standalone("ok", func(tb testing.TB) {
		tb.Cleanup(func() { order = append(order, "first") })
		tb.Cleanup(func() {
			order = append(order, "second")
			ctxDone = tb.Context().Err() != nil
		})
		tb.Log("a line")
		if tb.Name() != "ok" {
			tb.Errorf("name %q", tb.Name())
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(order, ",") != "second,first" {
		t.Fatalf("cleanups ran %v, want the last registered first", order)
	}
	if !ctxDone {
		t.Fatal("the ctx was not done when the cleanups ran")
	}
}

func TestStandaloneFatalStopsAndReports(t *testing.T) {
	after := false
	cleaned := false
	err := asynctest.Standalone("bad", func(tb testing.TB) {
		tb.Cleanup(func() { cleaned = true })
		tb.Errorf("first %d", 1)
		tb.Fatal("second")
		after = true
	})
	if err == nil || !strings.Contains(err.Error(), "first 1") || !strings.Contains(err.Error(), "second") {
		t.Fatalf("got %v; want an error with both messages", err)
	}
	if after {
		t.Fatal("Fatal did not stop fn")
	}
	if !cleaned {
		t.Fatal("the cleanup did not run after Fatal")
	}
}

func TestStandaloneSkip(t *testing.T) {
	err := asynctest.Standalone("skip", func(tb testing.TB) { tb.Skip("no clock here") })
	if !errors.Is(err, asynctest.ErrSkipped) || !strings.Contains(err.Error(), "no clock here") {
		t.Fatalf("got %v; want ErrSkipped with the reason", err)
	}
}

func TestStandaloneTempDirAndSetenv(t *testing.T) {
	var dir string
	const key = "ASYNCTEST_STANDALONE_PROBE"
	err := asynctest.Standalone("env", func(tb testing.TB) {
		dir = tb.TempDir()
		if _, err := os.Stat(dir); err != nil {
			tb.Fatal(err)
		}
		tb.Setenv(key, "1")
		if os.Getenv(key) != "1" {
			tb.Fatal("Setenv did not set")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("temp dir %s left behind: %v", dir, err)
	}
	if _, had := os.LookupEnv(key); had {
		t.Fatal("Setenv not undone")
	}
}
