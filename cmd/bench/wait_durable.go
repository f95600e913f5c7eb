//go:build durable

package main

import (
	"errors"
	"time"

	"github.com/taskfleet/async/client"
)

var errNoDurable = errors.New("unused: the option is there")

// setDurable sets the durable enqueue option on cfg: enqueues return once
// replicas replicas have the tasks, or fail after timeout.
func setDurable(cfg *client.Config, replicas int, timeout time.Duration) bool {
	cfg.WaitReplicas, cfg.WaitTimeout = replicas, timeout
	return true
}
