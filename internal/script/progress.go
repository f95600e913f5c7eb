package script

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

// The scripts that record what handlers report with
// worker.ReportProgress.

var (
	//go:embed pgset.lua
	pgSetSrc string
	//go:embed gpset.lua
	gpSetSrc string
)

var (
	// ProgressSet records a task's report in its progress hash.
	ProgressSet = newScript(pgSetSrc)
	// GroupProgressSet records a group member's report in its group's
	// progress hash.
	GroupProgressSet = newScript(gpSetSrc)
)

func init() { all = append(all, []*redis.Script{ProgressSet, GroupProgressSet}...) }
