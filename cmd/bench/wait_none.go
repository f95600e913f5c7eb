//go:build !durable

package main

import (
	"errors"
	"time"

	"github.com/taskfleet/async/client"
)

// errNoDurable says why the durable enqueue sub-phase did not run.
var errNoDurable = errors.New("the client of this tree has no durable enqueue option (client.Config.WaitReplicas, issue 21), so the sub-phase did not run")

// setDurable would set the durable enqueue option on cfg; this tree's
// client has none, so it reports false.
func setDurable(cfg *client.Config, replicas int, timeout time.Duration) bool { return false }
