package main

import (
	"errors"
	"time"

	"github.com/taskfleet/async/client"
)

// errNoDurable says why the durable enqueue part did not run; with
// client.Config.WaitReplicas in the tree it always runs.
var errNoDurable = errors.New("the client has no durable enqueue option")

// setDurable sets the durable enqueue option on cfg: enqueues return once
// replicas replicas have the tasks, or fail after timeout.
func setDurable(cfg *client.Config, replicas int, timeout time.Duration) bool {
	cfg.WaitReplicas, cfg.WaitTimeout = replicas, timeout
	return true
}
