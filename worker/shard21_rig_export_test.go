package worker

import (
	"context"
	"slices"
	"time"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// RigStart sets w up as Start does as far as the shard registry, the
// control channels and the pause flags go, with no loop running: a test
// then calls RigReadPaused and RigAddShards itself, in the order it
// wants. stop undoes it (and stops w, which was never started).
func RigStart(ctx context.Context, w *Worker) (stop func(), err error) {
	_ = w.initShards(ctx)
	qs := make([]keys.Queue, len(w.queues))
	for i, q := range w.queues {
		qs[i] = q.keys
	}
	if w.ctl, err = store.SubscribeControl(ctx, w.rdb, qs, 10*time.Second); err != nil {
		return nil, err
	}
	if err := w.initPause(ctx); err != nil {
		_ = w.ctl.Close()
		return nil, err
	}
	return func() {
		_ = w.ctl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = w.Stop(ctx)
	}, nil
}

// RigReadPaused is one read of the pause flags, as pauseLoop makes it.
func RigReadPaused(ctx context.Context, w *Worker) error { return w.readPaused(ctx) }

// RigAddShards is one poll of the shard registry, as shardLoop makes it.
func RigAddShards(ctx context.Context, w *Worker) error { return w.addShards(ctx) }

// RigServed returns the names of the queues w serves, sorted.
func RigServed(w *Worker) []string {
	var out []string
	for _, q := range w.queueList() {
		out = append(out, q.keys.Name)
	}
	slices.Sort(out)
	return out
}

// RigPaused returns the names of the queues w serves that it holds
// paused, sorted.
func RigPaused(w *Worker) []string {
	var out []string
	for _, q := range w.queueList() {
		if w.isPaused(q) {
			out = append(out, q.keys.Name)
		}
	}
	slices.Sort(out)
	return out
}
