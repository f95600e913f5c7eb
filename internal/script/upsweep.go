package script

import _ "embed"

//go:embed upsweep.lua
var upSweepSrc string

// UpSweep is the sweeper's removal of an ended task's upload record
// (internal/store/upsweep.go). It runs with EVALSHA, falling back to EVAL.
var UpSweep = newScript(upSweepSrc)
