package worker

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/taskfleet/async/internal/store"
)

// registry is a worker's registration in Redis (inspect.Workers lists it):
// a hash in the coordinators' slot that expires one Lease after it was last
// written, refreshed every Lease/3 and when the worker's paused queues
// change, and deleted by Stop. A worker that dies drops out within its
// lease.
type registry struct {
	host  string
	pid   int
	kinds []string // fixed once started (Handle refuses after Start)
	poke  chan struct{}
}

// registration is what the worker registers now.
func (w *Worker) registration() store.WorkerReg {
	w.inflightMu.Lock()
	running := len(w.inflight)
	w.inflightMu.Unlock()
	return store.WorkerReg{
		Name: w.cfg.Name, Host: w.reg.host, PID: w.reg.pid, Queues: w.cfg.Queues,
		Concurrency: w.cfg.Concurrency, Running: running, Paused: w.pausedNames(), Kinds: w.reg.kinds,
		StartedMs: w.clock.ToRedis(w.started).UnixMilli(),
	}
}

// initRegistry registers the worker for the first time (Start, w.mu held);
// an error is logged, and registryLoop tries again.
func (w *Worker) initRegistry(ctx context.Context) {
	for k := range w.handlers {
		w.reg.kinds = append(w.reg.kinds, k)
	}
	w.reg.host, _ = os.Hostname()
	w.reg.pid = os.Getpid()
	w.reg.poke = make(chan struct{}, 1)
	if _, err := store.Register(ctx, w.rdb, w.registration(), w.cfg.Lease); err != nil {
		w.log.Warn("register the worker", slog.Any("err", err))
	}
}

// registryLoop (support) refreshes the registration every Lease/3, and at
// once when poked.
func (w *Worker) registryLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.reg.poke:
		}
		rctx, cancel := context.WithTimeout(ctx, w.cfg.Lease/3)
		_, err := store.Register(rctx, w.rdb, w.registration(), w.cfg.Lease)
		cancel()
		if err != nil && ctx.Err() == nil {
			w.log.Warn("refresh the worker's registration", slog.Any("err", err))
		}
	}
}

// registryPoke asks registryLoop to refresh the registration now.
func (w *Worker) registryPoke() {
	if w.reg.poke == nil {
		return // before Start: initRegistry writes it whole
	}
	select {
	case w.reg.poke <- struct{}{}:
	default:
	}
}

// unregister deletes the registration (shutdown, once every loop ended).
func (w *Worker) unregister() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := store.Unregister(ctx, w.rdb, w.cfg.Name); err != nil {
		w.log.Warn("unregister the worker", slog.Any("err", err))
	}
}
