package engine

import (
	"errors"

	"github.com/taskfleet/async/internal/keys"
)

// The errors the engine returns; package client exports them under the same
// names, so that errors.Is matches across packages.
var (
	ErrNotFound        = errors.New("task not found")
	ErrPayloadTooLarge = errors.New("task payload too large")
	ErrInvalidName     = keys.ErrInvalidName
	ErrRedisFull       = errors.New("redis is full: used memory is over maxmemory, writes are refused")
	ErrClosed          = errors.New("client closed")

	// ErrGroupEnded is returned by SendMembers when the group ended (fail
	// fast) while its members were being added; the rest were not added.
	ErrGroupEnded = errors.New("group ended")
)
