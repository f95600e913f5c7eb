package main

import (
	"context"
	"log/slog"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/upload"
)

// newUploadHandler is the process' upload handler: the upload flags'
// configuration, with the upload roots, the worker's Redis (resume
// records, progress, the per-destination limits) and the process' log.
func newUploadHandler(cfg *config, rdb redis.UniversalClient, log *slog.Logger) (*upload.Handler, error) {
	uc := cfg.upload.cfg
	uc.Roots = cfg.uploadRoots
	uc.Redis = rdb
	uc.Logger = log
	return upload.New(uc)
}

// uploadSweeper runs the upload handler's sweeper in the background.
type uploadSweeper struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// startUploadSweeper starts h's sweeper over the worker's queues, every
// cfg.upload.sweep (none when that is 0). Every worker process runs one:
// two sweeps of the same upload abort it once.
func startUploadSweeper(cfg *config, h *upload.Handler, log *slog.Logger) *uploadSweeper {
	s := &uploadSweeper{done: make(chan struct{})}
	if cfg.upload.sweep <= 0 {
		close(s.done)
		s.cancel = func() {}
		return s
	}
	queues := make([]string, 0, len(cfg.queues))
	for q := range cfg.queues {
		queues = append(queues, q)
	}
	sort.Strings(queues)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.done)
		_ = h.RunSweeper(ctx, cfg.upload.sweep, queues...)
	}()
	log.Info("upload sweeper started", slog.String("every", cfg.upload.sweep.String()), slog.Any("queues", queues))
	return s
}

// stop stops the sweeper and waits for its pass to end (at most a few
// seconds: a pass's requests end with its ctx).
func (s *uploadSweeper) stop() {
	s.cancel()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
	}
}
