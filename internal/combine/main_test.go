package combine

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: every
// caller and leader a test starts must have returned.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
