package store

import (
	"math/rand/v2"
	"strconv"
)

// newOpID returns a random id for one call of an operation: the calls a
// script makes for it carry the id, so that a resend of one (the same
// arguments again) can be told from another call.
func newOpID() string {
	return strconv.FormatUint(rand.Uint64(), 36) + "." + strconv.FormatUint(rand.Uint64(), 36)
}
