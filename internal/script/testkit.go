package script

import _ "embed"

//go:embed leaselapse.lua
var leaseLapseSrc string

// LeaseLapse is used by the public test kit only (asynctest's LoseWorker);
// it is not loaded with the others (Load): it runs with EVALSHA, falling
// back to EVAL.
var LeaseLapse = newScript(leaseLapseSrc)
