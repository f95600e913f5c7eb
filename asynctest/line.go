package asynctest

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// errCut is what every command of a worker that LoseWorker cut off gets.
var errCut = &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("asynctest: the worker is cut off from Redis (LoseWorker)")}

// line is a worker's line to Redis (a go-redis hook on its client): once
// cut, every command, pipeline and new connection fails with errCut, as if
// the worker's process had died or lost its network.
type line struct {
	mu   sync.Mutex
	off  bool
	busy int           // calls under way (nested ones too: a new connection's set-up)
	idle chan struct{} // closed when busy drops to 0, for a cut waiting
}

// cutWait bounds how long cut waits for the calls under way.
const cutWait = 10 * time.Second

// cut cuts the line, once the calls under way (a blocking read: at most a
// BlockTimeout) returned: what they read was delivered to the worker, and
// is pending under its consumer when cut returns.
func (l *line) cut() {
	l.mu.Lock()
	l.off = true
	if l.busy == 0 {
		l.mu.Unlock()
		return
	}
	if l.idle == nil {
		l.idle = make(chan struct{})
	}
	idle := l.idle
	l.mu.Unlock()
	t := time.NewTimer(cutWait)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	}
}

// restore connects the line again.
func (l *line) restore() {
	l.mu.Lock()
	l.off = false
	l.mu.Unlock()
}

// isOff reports whether the line is cut.
func (l *line) isOff() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.off
}

// enter counts a call in, unless the line is cut.
func (l *line) enter() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.off {
		return false
	}
	l.busy++
	return true
}

func (l *line) leave() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.busy--
	if l.busy == 0 && l.idle != nil {
		close(l.idle)
		l.idle = nil
	}
}

func (l *line) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if !l.enter() {
			return nil, errCut
		}
		defer l.leave()
		return next(ctx, network, addr)
	}
}

func (l *line) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !l.enter() {
			cmd.SetErr(errCut)
			return errCut
		}
		defer l.leave()
		return next(ctx, cmd)
	}
}

func (l *line) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !l.enter() {
			for _, c := range cmds {
				c.SetErr(errCut)
			}
			return errCut
		}
		defer l.leave()
		return next(ctx, cmds)
	}
}
