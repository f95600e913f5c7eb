package metrics_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/taskfleet/async/internal/testenv"
)

func TestMain(m *testing.M) {
	if testenv.RunSubprocess() {
		return
	}
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}
