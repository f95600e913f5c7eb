package script

import _ "embed"

// The resume records of package upload's multipart uploads
// (internal/store/upload.go runs them).

var (
	//go:embed upbegin.lua
	upBeginSrc string
	//go:embed uppart.lua
	upPartSrc string
	//go:embed upend.lua
	upEndSrc string
)

// These run with EVALSHA, falling back to EVAL (they are not part of Load:
// only upload handlers use them).
var (
	UpBegin = newScript(upBeginSrc)
	UpPart  = newScript(upPartSrc)
	UpEnd   = newScript(upEndSrc)
)
