package client

import (
	"fmt"
	"time"

	"github.com/taskfleet/async/internal/engine"
)

// DefaultWaitTimeout is Config.WaitTimeout's default.
const DefaultWaitTimeout = time.Second

// ErrNotReplicated is matched (errors.Is) by the error of an enqueue made
// with Config.WaitReplicas whose tasks the master accepted but fewer
// replicas than asked confirmed within Config.WaitTimeout. The tasks are in
// Redis and will run unless that master fails before they reach a replica;
// Enqueue returns the handle with this error, EnqueueMany the handles.
// Enqueueing again with the same EnqueueOpts.ID is safe: it adds nothing,
// and waits for the replicas again.
var ErrNotReplicated = engine.ErrNotReplicated

// NotReplicatedError is the error that matches ErrNotReplicated (errors.As
// finds it): how many replicas were asked for (Want) and confirmed (Acked;
// -1 when WAIT's answer was lost, Err then says why), and the master's
// address.
type NotReplicatedError = engine.NotReplicatedError

// validateWait checks WaitReplicas and WaitTimeout (after defaults).
func (c *Config) validateWait() error {
	switch {
	case c.WaitReplicas < 0:
		return fmt.Errorf("client: Config.WaitReplicas is %d, must not be negative", c.WaitReplicas)
	case c.WaitReplicas == 0 && c.WaitTimeout != 0:
		return fmt.Errorf("client: Config.WaitTimeout is %v but Config.WaitReplicas is 0; set WaitReplicas to wait for replicas", c.WaitTimeout)
	case c.WaitReplicas > 0 && c.WaitTimeout < time.Millisecond:
		return fmt.Errorf("client: Config.WaitTimeout is %v, must be at least 1ms (WAIT counts milliseconds; it has no \"for ever\" here)", c.WaitTimeout)
	}
	return nil
}
