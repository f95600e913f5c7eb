package patterns

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/taskfleet/async/client"
	"github.com/taskfleet/async/internal/codec"
	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/internal/store"
)

// Partitioned is a group started by Partition or Partitioner.Flush: one
// member task per partition key.
type Partitioned struct {
	*Group
	keys []string // partition key of each member, in member order
}

// Keys returns the partition keys, in member order (sorted).
func (p *Partitioned) Keys() []string { return slices.Clone(p.keys) }

// OutcomeByKey waits until the group ended and returns how each
// partition's task ended, by partition key.
func (p *Partitioned) OutcomeByKey(ctx context.Context) (map[string]Outcome, error) {
	outs, err := p.Outcome(ctx)
	if err != nil && len(outs) != len(p.keys) {
		return nil, err
	}
	m := make(map[string]Outcome, len(outs))
	for i, o := range outs {
		m[p.keys[i]] = o
	}
	return m, err
}

// ResultsByKey waits for p and decodes each partition's result into an R,
// by partition key; the error joins those of the tasks that did not
// succeed (their keys are left out).
func ResultsByKey[R any](ctx context.Context, p *Partitioned) (map[string]R, error) {
	outs, err := p.Outcome(ctx)
	if err != nil && len(outs) != len(p.keys) {
		return nil, err
	}
	m := make(map[string]R, len(outs))
	var errs []error
	for i, o := range outs {
		v, err := ResultOf[R](o)
		if err != nil {
			errs = append(errs, fmt.Errorf("partition %q: %w", p.keys[i], err))
			continue
		}
		m[p.keys[i]] = v
	}
	return m, errors.Join(errs...)
}

// Partition is grab/async's Partitioner in one call: it groups items by
// keyFunc and starts one task per partition, spec(key, items of that key)
// in the order the items came, as a ForkJoin group without a join (opts, nil
// or not, as for ForkJoin), run concurrently across the fleet. A
// partition's items travel in its task's args, so each partition must fit
// the client's MaxPayloadBytes.
func Partition[T any](ctx context.Context, c *client.Client, items []T, keyFunc func(T) string, spec func(key string, items []T) client.Spec, opts *GroupOpts) (*Partitioned, error) {
	if keyFunc == nil || spec == nil {
		return nil, errors.New("patterns.Partition: keyFunc and spec must not be nil")
	}
	byKey := map[string][]T{}
	for _, it := range items {
		k := keyFunc(it)
		byKey[k] = append(byKey[k], it)
	}
	return startPartitions(ctx, c, "patterns.Partition", byKey, spec, opts)
}

func startPartitions[T any](ctx context.Context, c *client.Client, what string, byKey map[string][]T, spec func(string, []T) client.Spec, opts *GroupOpts) (*Partitioned, error) {
	ks := slices.Sorted(func(yield func(string) bool) {
		for k := range byKey {
			if !yield(k) {
				return
			}
		}
	})
	specs := make([]client.Spec, len(ks))
	for i, k := range ks {
		specs[i] = spec(k, byKey[k])
		if specs[i].Args == nil {
			return nil, fmt.Errorf("%s: spec for partition %q has nil Args", what, k)
		}
	}
	g, err := ForkJoin(ctx, c, specs, nil, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return &Partitioned{Group: g, keys: ks}, nil
}

// PartitionerOpts configures a Partitioner; a nil *PartitionerOpts means
// every default.
type PartitionerOpts struct {
	// Queue holds the accumulated items (and is the default home of the
	// groups Flush starts). Defaults to the client's default queue.
	Queue string
}

// Partitioner is grab/async's Partitioner across processes: any number of
// producers Append items, which accumulate in Redis under the partitioner's
// name; Flush takes everything appended so far (atomically: an item
// appended during a Flush goes to this one or the next, never both, never
// neither) and starts one task per partition key.
type Partitioner[T any] struct {
	c       *client.Client
	name    string
	keyFunc func(T) string
	q       keys.Queue
}

// NewPartitioner returns the partitioner name (the rule [A-Za-z0-9._-], at
// most 64 bytes); every process using the same name and queue shares its
// items. opts may be nil.
func NewPartitioner[T any](c *client.Client, name string, keyFunc func(T) string, opts *PartitionerOpts) (*Partitioner[T], error) {
	if c == nil {
		return nil, errors.New("patterns.NewPartitioner: client is nil")
	}
	if keyFunc == nil {
		return nil, errors.New("patterns.NewPartitioner: keyFunc is nil")
	}
	if err := keys.ValidateName("partitioner", name); err != nil {
		return nil, fmt.Errorf("patterns.NewPartitioner: %w", err)
	}
	if len(name) > 64 {
		return nil, fmt.Errorf("patterns.NewPartitioner: name %.32q... is %d bytes, the limit is 64: %w", name, len(name), keys.ErrInvalidName)
	}
	var queue string
	if opts != nil {
		queue = opts.Queue
	}
	if queue == "" {
		queue = defaultQueue(c)
	} else if err := keys.ValidateName("queue", queue); err != nil {
		return nil, fmt.Errorf("patterns.NewPartitioner: PartitionerOpts.Queue: %w", err)
	}
	return &Partitioner[T]{c: c, name: name, keyFunc: keyFunc, q: keys.ForQueue(queue)}, nil
}

// appendEntry is one appended item with its key.
type appendEntry struct {
	_msgpack struct{} `msgpack:",as_array"`
	Key      string
	Item     []byte
}

// Append adds items; each goes to the partition keyFunc names.
func (p *Partitioner[T]) Append(ctx context.Context, items ...T) error {
	if len(items) == 0 {
		return nil
	}
	vals := make([][]byte, len(items))
	for i, it := range items {
		b, err := codec.Marshal(it)
		if err != nil {
			return fmt.Errorf("patterns.Partitioner %s: encode item %d: %w", p.name, i, err)
		}
		e, err := codec.Marshal(appendEntry{Key: p.keyFunc(it), Item: b})
		if err != nil {
			return fmt.Errorf("patterns.Partitioner %s: encode item %d: %w", p.name, i, err)
		}
		vals[i] = e
	}
	if err := store.RegisterQueue(ctx, engineOf(p.c).Redis(), p.q.Name); err != nil {
		return err
	}
	if err := store.AppendPartitioner(ctx, engineOf(p.c).Redis(), p.q, p.name, vals); err != nil {
		return fmt.Errorf("patterns.Partitioner %s: %w", p.name, err)
	}
	return nil
}

// Len is how many items wait for the next Flush.
func (p *Partitioner[T]) Len(ctx context.Context) (int64, error) {
	return store.PartitionerLen(ctx, engineOf(p.c).Redis(), p.q, p.name)
}

// Flush takes every item appended so far and starts one task per
// partition, spec(key, items of that key in append order), as Partition
// does; opts are ForkJoin's, nil or not (Flush sets their ID and Queue).
// It returns nil and no error when there was nothing to flush. A Flush that fails after taking
// the items leaves them in a snapshot, which a Flush at least a minute later
// starts, in a group whose id derives from the snapshot ("pt.<name>.<snapshot>"),
// so nothing is lost or started twice; a snapshot that fails to start
// again (say, a partition over MaxPayloadBytes) stays pending, named in the
// error, and holds up no other. A Flush whose group started but whose
// snapshot could not be dropped returns that group with the error.
func (p *Partitioner[T]) Flush(ctx context.Context, spec func(key string, items []T) client.Spec, opts *GroupOpts) (*Partitioned, error) {
	what := "patterns.Partitioner " + p.name + ": flush"
	if spec == nil {
		return nil, fmt.Errorf("%s: spec is nil", what)
	}
	rdb := engineOf(p.c).Redis()
	// Take what was appended into a snapshot of its own, listed as pending.
	snap := "s" + randomID()
	took, err := store.TakePartitioner(ctx, rdb, p.q, p.name, snap, time.Now().UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	// Start our snapshot, then any a failed Flush left (older than a
	// minute: younger ones belong to Flushes still at work). One that
	// fails does not hold up the others; it stays pending.
	var errs []error
	var ours *Partitioned
	if took {
		if ours, err = p.startSnapshot(ctx, snap, spec, opts); err != nil {
			errs = append(errs, fmt.Errorf("snapshot %s: %w", snap, err))
		}
	}
	old, err := store.PendingSnapshots(ctx, rdb, p.q, p.name, time.Now().Add(-leftoverAge).UnixMilli())
	if err != nil {
		errs = append(errs, err)
	}
	for _, s := range old {
		if _, err := p.startSnapshot(ctx, s, spec, opts); err != nil {
			errs = append(errs, fmt.Errorf("snapshot %s left by a failed flush: %w", s, err))
		}
	}
	if len(errs) > 0 {
		return ours, fmt.Errorf("%s: %w", what, errors.Join(errs...))
	}
	return ours, nil
}

// leftoverAge is how old a pending snapshot must be for a Flush other than
// the one that took it to start it.
const leftoverAge = time.Minute

func (p *Partitioner[T]) startSnapshot(ctx context.Context, snap string, spec func(string, []T) client.Spec, opts *GroupOpts) (*Partitioned, error) {
	rdb := engineOf(p.c).Redis()
	raw, err := store.SnapshotItems(ctx, rdb, p.q, p.name, snap)
	if err != nil {
		return nil, err
	}
	byKey := map[string][]T{}
	for i, r := range raw {
		var e appendEntry
		if err := codec.Unmarshal([]byte(r), &e); err != nil {
			return nil, fmt.Errorf("snapshot %s item %d: %w", snap, i, err)
		}
		var v T
		if err := codec.Unmarshal(e.Item, &v); err != nil {
			return nil, fmt.Errorf("snapshot %s item %d: decode into %T: %w", snap, i, v, err)
		}
		byKey[e.Key] = append(byKey[e.Key], v)
	}
	var g *Partitioned
	if len(byKey) > 0 {
		var o GroupOpts
		if opts != nil {
			o = *opts
		}
		o.ID, o.Queue = "pt."+p.name+"."+snap, p.q.Name
		if g, err = startPartitions(ctx, p.c, "start partitions", byKey, spec, &o); err != nil {
			return nil, err
		}
	}
	// Started (or empty): the snapshot is done. Should that fail, the
	// groups did start: the caller gets them with the error, and the
	// snapshot, still listed, starts again as the same groups.
	if err := store.SnapshotDone(ctx, rdb, p.q, p.name, snap); err != nil {
		return g, fmt.Errorf("drop the started snapshot: %w", err)
	}
	return g, nil
}

// defaultQueue is the client's default queue.
func defaultQueue(c *client.Client) string { return engineOf(c).QueueOf(nil) }
