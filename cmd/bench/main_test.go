package main

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/taskfleet/async/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}
