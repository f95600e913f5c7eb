package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/script"
)

// partEnds are the outbox entries of one partition read by a drain round:
// their ids, and the keys the latest of them named (complete.lua: the task
// that ended, k, and the task behind it when its start recorded one, nx).
type partEnds struct {
	ids      []string
	ended    string
	next     string
	complete bool // ended and next are from the latest entry and both set
}

// add notes outbox entry e (kind pt) of the partition; pe may be nil.
func (pe *partEnds) add(e redis.XMessage) *partEnds {
	if pe == nil {
		pe = &partEnds{}
	}
	pe.ids = append(pe.ids, e.ID)
	// The latest end names the head as it now is; an older entry's names
	// are stale.
	k, _ := e.Values["k"].(string)
	nx, _ := e.Values["nx"].(string)
	pe.ended, pe.next, pe.complete = k, nx, k != "" && nx != ""
	return pe
}

// stepPartitions advances the partitions of q that parts names (see
// partstep.lua). A partition whose latest outbox entry named the task that
// ended and the one behind it is stepped with those two keys at once; the
// others, and those the script finds changed ('again'), have the first two
// keys of their list read first (one pipeline), and are stepped in the next
// pipeline, until none answers 'again'.
func stepPartitions(ctx context.Context, rdb redis.UniversalClient, q keys.Queue, parts map[string]*partEnds) error {
	type call struct{ pk, first, second string }
	var calls []call // stepped with the keys given, no read first
	var read []string
	for pk, pe := range parts {
		if pe.complete {
			calls = append(calls, call{pk, pe.ended, pe.next})
		} else {
			read = append(read, pk)
		}
	}
	for len(calls) > 0 || len(read) > 0 {
		if len(read) > 0 {
			pipe := rdb.Pipeline()
			heads := make([]*redis.StringSliceCmd, len(read))
			for i, pk := range read {
				heads[i] = pipe.LRange(ctx, q.Partition(pk), 0, 1)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return fmt.Errorf("read partitions of queue %q: %w", q.Name, err)
			}
			for i, pk := range read {
				h := heads[i].Val()
				if len(h) == 0 {
					continue
				}
				second := ""
				if len(h) > 1 {
					second = h[1]
				}
				calls = append(calls, call{pk, h[0], second})
			}
			read = read[:0]
		}
		if len(calls) == 0 {
			return nil
		}
		pipe := rdb.Pipeline()
		steps := make([]*redis.Cmd, len(calls))
		for i, c := range calls {
			steps[i] = script.PartStep.Run(ctx, pipe, []string{q.Partition(c.pk), q.Task(c.first), q.Task(c.second), q.Stream(), q.Stats()}, c.first, c.second)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			if !strings.HasPrefix(err.Error(), "NOSCRIPT") {
				return fmt.Errorf("advance partitions of queue %q: %w", q.Name, err)
			}
			// The script cache was flushed (a Redis restart): load and
			// read again (the steps are idempotent).
			if err := script.Load(ctx, rdb); err != nil {
				return err
			}
			for _, c := range calls {
				read = append(read, c.pk)
			}
			calls = calls[:0]
			continue
		}
		for i, c := range steps {
			if r, _ := c.Text(); r == "again" {
				read = append(read, calls[i].pk)
			}
		}
		calls = calls[:0]
	}
	return nil
}

// declareParts appends to complete.lua's keys and args the partitions that
// items' entries named (Completion.Part, Next): per such item its list and
// the hash of the task behind it, the list again when none was named. All
// are q's keys, in its slot.
func declareParts(q keys.Queue, items []Completion, ks []string, args []any) ([]string, []any) {
	n := 0
	for _, c := range items {
		if c.Part != "" {
			n++
		}
	}
	args = append(args, n)
	for i, c := range items {
		if c.Part == "" {
			continue
		}
		l := q.Partition(c.Part)
		nk := l
		if c.Next != "" {
			nk = q.Task(c.Next)
		}
		ks = append(ks, l, nk)
		args = append(args, i+1, c.Part, c.Next)
	}
	return ks, args
}
