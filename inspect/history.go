package inspect

import (
	"context"
	"fmt"
	"time"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// MaxHistoryMinutes is the most minutes History reaches back: a day.
const MaxHistoryMinutes = store.HistoryMinutes

// History returns the per-minute processed and failed counts of queue over
// the last minutes (1 to MaxHistoryMinutes), oldest first, one entry per
// minute of Redis time (zeros included), the current minute, still
// counting, last. The completion scripts keep them in Redis (one ring of a
// day's minutes per queue, in the queue's slot), so they survive restarts
// of every process; reading them is one round trip, whatever the queue's
// size. They count as QueueInfo.Processed and Failed do. A sharded
// queue's minutes are the sums over its physical queues (one round trip
// each); a shard's name gives that shard's.
func (i *Inspector) History(ctx context.Context, queue string, minutes int) ([]MinuteStat, error) {
	if minutes < 1 || minutes > MaxHistoryMinutes {
		return nil, fmt.Errorf("inspect: History of %d minutes; want 1 to %d", minutes, MaxHistoryMinutes)
	}
	parts, err := i.physical(ctx, queue)
	if err != nil {
		return nil, err
	}
	var out []MinuteStat
	for k, p := range parts {
		ms, err := store.QueueHistory(ctx, i.rdb, keys.ForQueue(p), minutes)
		if err != nil {
			return nil, err
		}
		if k == 0 {
			out = make([]MinuteStat, len(ms))
			for j, m := range ms {
				out[j] = MinuteStat{Minute: time.Unix(m.Minute*60, 0).UTC(), Processed: m.Processed, Failed: m.Failed}
			}
			continue
		}
		// The parts' minutes are the same when read within one minute;
		// a minute only one of them has (the clock turned between the
		// reads) is left out of the sum.
		at := map[int64]int{}
		for j, o := range out {
			at[o.Minute.Unix()/60] = j
		}
		for _, m := range ms {
			if j, ok := at[m.Minute]; ok {
				out[j].Processed += m.Processed
				out[j].Failed += m.Failed
			}
		}
	}
	return out, nil
}
