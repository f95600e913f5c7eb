package client_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/taskfleet/async/internal/testenv"
)

// TestMain fails the package when a test or an example leaves a goroutine
// behind: every Example stops the worker, client and miniredis it starts.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}
