package asynctest

import (
	"context"
	"errors"
	"net"
	"sync"

	"github.com/redis/go-redis/v9"
)

// errCut is what every command of a worker that LoseWorker cut off gets.
var errCut = &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("asynctest: the worker is cut off from Redis (LoseWorker)")}

// line is a worker's line to Redis (a go-redis hook on its client): once
// cut, every command, pipeline and new connection fails with errCut, as if
// the worker's process had died or lost its network.
type line struct {
	mu  sync.RWMutex // held for reading by every call under way
	off bool
}

// cut cuts the line, once the calls under way (a blocking read: at most a
// BlockTimeout) returned: what they read was delivered to the worker, and
// is pending under its consumer when cut returns.
func (l *line) cut() {
	l.mu.Lock()
	l.off = true
	l.mu.Unlock()
}

// restore connects the line again.
func (l *line) restore() {
	l.mu.Lock()
	l.off = false
	l.mu.Unlock()
}

func (l *line) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		l.mu.RLock()
		off := l.off
		l.mu.RUnlock()
		if off {
			return nil, errCut
		}
		return next(ctx, network, addr)
	}
}

func (l *line) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		l.mu.RLock()
		defer l.mu.RUnlock()
		if l.off {
			cmd.SetErr(errCut)
			return errCut
		}
		return next(ctx, cmd)
	}
}

func (l *line) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		l.mu.RLock()
		defer l.mu.RUnlock()
		if l.off {
			for _, c := range cmds {
				c.SetErr(errCut)
			}
			return errCut
		}
		return next(ctx, cmds)
	}
}
