package inspect_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/taskfleet/async/internal/asynctest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, asynctest.LeakOptions()...)
}
