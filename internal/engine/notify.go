package engine

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/store"
)

// hub multiplexes one pub/sub connection among every Outcome call of a
// Client. Each queue has a done channel on which a worker publishes the key of
// a watched task when it ends. Waiters subscribe before they read the task's
// state, so an end that happens after the read is always announced; after a
// reconnect (when messages may have been missed) every waiter of the channel is
// woken to read its state again.
type hub struct {
	rdb redis.UniversalClient

	mu      sync.Mutex
	ps      *store.Sub
	chans   map[string]*hubChan
	started bool
	closed  bool
	cancel  context.CancelFunc
	exited  chan struct{} // closed when the receive loop returned
	done    chan struct{} // closed by close
}

type hubChan struct {
	ready   chan struct{} // closed at the first subscribe confirmation
	isReady bool
	waiters map[string]map[chan struct{}]struct{}
}

func newHub(rdb redis.UniversalClient) *hub {
	return &hub{rdb: rdb, chans: map[string]*hubChan{}, exited: make(chan struct{}), done: make(chan struct{})}
}

// watch registers a waiter for key on channel and returns once the channel's
// subscription is confirmed. The returned channel receives a value whenever
// the task may have ended.
func (h *hub) watch(ctx context.Context, channel, key string) (chan struct{}, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	if !h.started {
		h.started = true
		h.ps = store.Subscribe(context.Background(), h.rdb)
		lctx, cancel := context.WithCancel(context.Background())
		h.cancel = cancel
		go h.loop(lctx)
	}
	hc := h.chans[channel]
	newChan := hc == nil
	if newChan {
		hc = &hubChan{ready: make(chan struct{}), waiters: map[string]map[chan struct{}]struct{}{}}
		h.chans[channel] = hc
	}
	w := make(chan struct{}, 1)
	if hc.waiters[key] == nil {
		hc.waiters[key] = map[chan struct{}]struct{}{}
	}
	hc.waiters[key][w] = struct{}{}
	h.mu.Unlock()

	if newChan {
		if err := h.ps.Subscribe(ctx, channel); err != nil {
			// go-redis keeps the channel and subscribes again when it
			// reconnects; the confirmation then readies hc for the
			// watchers that wait on it.
			h.unwatch(channel, key, w)
			return nil, err
		}
	}
	select {
	case <-hc.ready:
		return w, nil
	case <-ctx.Done():
		h.unwatch(channel, key, w)
		return nil, ctx.Err()
	case <-h.done:
		return nil, ErrClosed
	}
}

func (h *hub) unwatch(channel, key string, w chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if hc := h.chans[channel]; hc != nil {
		delete(hc.waiters[key], w)
		if len(hc.waiters[key]) == 0 {
			delete(hc.waiters, key)
		}
	}
}

func (h *hub) loop(ctx context.Context) {
	defer close(h.exited)
	for {
		n, err := h.ps.Receive(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// The connection broke; the next Receive reconnects and
			// resubscribes. Pause briefly so a down server is not hammered.
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		h.mu.Lock()
		if hc := h.chans[n.Channel]; hc != nil {
			if n.Subscribed {
				if !hc.isReady {
					hc.isReady = true
					close(hc.ready)
				}
				for _, ws := range hc.waiters {
					for w := range ws {
						wake(w)
					}
				}
			} else {
				for w := range hc.waiters[n.Payload] {
					wake(w)
				}
			}
		}
		h.mu.Unlock()
	}
}

func wake(w chan struct{}) {
	select {
	case w <- struct{}{}:
	default:
	}
}

func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	started := h.started
	close(h.done)
	h.mu.Unlock()
	if started {
		h.cancel()
		_ = h.ps.Close()
		<-h.exited
	}
}
