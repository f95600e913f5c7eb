package conformance

import (
	"testing"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/worker"
)

const callPartStep = "EVALSHA partstep"

// partitionFleetRows are the worker's writes for the tasks of one partition
// key: each end records the task behind it in the outbox entry (complete.lua)
// and the drain starts it (partstep.lua, stepped with the keys that entry
// names, or with the list read first): a resent completion or step leaves
// the partition as a clean run does, each task run once and in order.
func partitionFleetRows() []fleetRow {
	three := func(mode string) func(f *fleetRun) {
		return func(f *fleetRun) {
			for range 3 {
				f.H = append(f.H, f.enqueueJob(FleetJob{Mode: mode}, &client.EnqueueOpts{PartitionKey: "k"}))
			}
		}
	}
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
	}
}

func TestResendConformanceFleetPartition(t *testing.T) {
	runFleet(t, partitionFleetRows())
}
