package upload_test

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/script"
	"github.com/taskfleet/async/internal/testenv"
)

// The fault proxy names upload's scripts by their files, as it does the
// others: a conformance table matches and shows "EVALSHA upbegin", not a
// SHA1.
func TestUploadScriptsNamedByTheFaultProxy(t *testing.T) {
	for name, s := range map[string]*redis.Script{"upbegin": script.UpBegin, "uppart": script.UpPart, "upend": script.UpEnd, "upsweep": script.UpSweep} {
		if got := testenv.ScriptName(s.Hash()); got != name {
			t.Errorf("testenv.ScriptName(%s's SHA1) = %q, want %q", name, got, name)
		}
	}
}
