package script

import _ "embed"

//go:embed enqueue20.lua
var enqueueOneSrc string

// EnqueueOne adds one auto-keyed task under an entry id the client chose
// (internal/store/enqueue20.go). It runs with EVALSHA, falling back to EVAL.
var EnqueueOne = newScript(enqueueOneSrc)

// Loaded at New with the others.
func init() { all = append(all, EnqueueOne) }
