package metrics_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/taskfleet/async/internal/asynctest"
)

func TestMain(m *testing.M) {
	if asynctest.RunSubprocess() {
		return
	}
	goleak.VerifyTestMain(m, asynctest.LeakOptions()...)
}
