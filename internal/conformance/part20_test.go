package conformance

import (
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/worker"
)

const callPartStep = "EVALSHA partstep"

// partitionFleetRows are the worker's writes for the tasks of one partition
// key. The first task's end records the task behind it in the outbox entry
// (complete.lua) and the drain starts it (partstep.lua, stepped with the
// keys that entry names, or with the list read first); the end of a task a
// step started steps the partition in complete.lua itself (its entry named
// the task behind it), unless its attempt was retried first (the retry's
// entry names none: the outbox again). A resent completion or step leaves
// the partition as a clean run does, each task run once and in order.
func partitionFleetRows() []fleetRow {
	modes := func(ms ...string) func(f *fleetRun) {
		return func(f *fleetRun) {
			for _, m := range ms {
				f.H = append(f.H, f.enqueueJob(FleetJob{Mode: m}, &client.EnqueueOpts{PartitionKey: "k"}))
			}
		}
	}
	three := func(mode string) func(f *fleetRun) { return modes(mode, mode, mode) }
	ran := func(st client.State) func(f *fleetRun) string {
		return func(f *fleetRun) string {
			w := f.startWorker(worker.Config{})
			for _, h := range f.H {
				f.waitState(h, st)
			}
			f.waitOutboxEmpty()
			f.stopWorker(w, false)
			return ""
		}
	}
	return []fleetRow{
		{Name: "partition/succeeded", Setup: three(modeOK), Op: ran(client.StateSucceeded),
			Fault: only(maxNth, callComplete, callPartStep)},
		{Name: "partition/dead", Setup: three(modePermanent), Op: ran(client.StateDead),
			Fault: only(maxNth, callComplete, callPartStep)},
		{Name: "partition/retried", Setup: modes(modeOK, modeFailOnce, modeOK), Op: ran(client.StateSucceeded),
			Fault: only(maxNth, callComplete, callPartStep, callForward)},
		{Name: "partition/cancelled-running", Setup: modes(modeOK, modeBlock, modeOK), Op: func(f *fleetRun) string {
			w := f.startWorker(worker.Config{})
			f.waitStarted()
			st, err := f.task(f.H[1]).Cancel(f.Ctx)
			f.waitState(f.H[0], client.StateSucceeded)
			f.waitState(f.H[1], client.StateCancelled)
			f.waitState(f.H[2], client.StateSucceeded)
			f.waitOutboxEmpty()
			f.stopWorker(w, false)
			return Answer(st, err)
		}, Fault: only(maxNth, callComplete, callPartStep)},
	}
}

func TestResendConformanceFleetPartition(t *testing.T) {
	runFleet(t, partitionFleetRows())
}
