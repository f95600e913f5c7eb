package inspect

import (
	"context"
	"time"

	"github.com/taskfleet/async/internal/store"
)

// workers lists the registrations that have not expired (Workers).
func (i *Inspector) workers(ctx context.Context) ([]WorkerInfo, error) {
	rs, err := store.Workers(ctx, i.rdb)
	if err != nil {
		return nil, err
	}
	out := make([]WorkerInfo, len(rs))
	for j, r := range rs {
		out[j] = WorkerInfo{Name: r.Name, Host: r.Host, PID: r.PID, Queues: r.Queues, Concurrency: r.Concurrency,
			Running: r.Running, Paused: r.Paused, Started: msTime(r.StartedMs), LastHeartbeat: msTime(r.HeartbeatMs)}
	}
	return out, nil
}

// msTime is the time of Unix ms, zero for 0.
func msTime(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
