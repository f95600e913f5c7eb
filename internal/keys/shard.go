package keys

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Issue 21: sharded queues. A queue declared with N shards is N physical
// queues, "<queue>~<i>.<salt>" for i in 0..N-1. No public name can hold '~',
// so a shard never collides with a queue of its own; ForQueue of a shard's
// name gives its keys as for any queue, under the hash tag
// {q:<queue>~<i>.<salt>}. The salt is chosen (PlaceShards) so that the
// shards' tags land on slots spread over the cluster's masters.

// ShardSep separates a sharded queue's name from a shard's index in the
// shard's physical name.
const ShardSep = '~'

// MaxShards bounds the shards of one queue.
const MaxShards = 1024

// maxSaltLen bounds a salt: FormatInt(k, 36) of a k below 36^6. The search
// (saltFor) meets a given slot once in 16384 candidates on average, within
// four characters (36^4 candidates) all but never: six leave a wide margin.
const maxSaltLen = 6

// MaxPhysicalLen bounds a physical queue name: a public one, or a shard's
// (the longest queue name, '~', the largest index, '.', the longest salt).
const MaxPhysicalLen = MaxNameLen + 1 + 4 + 1 + maxSaltLen

// ShardName is the physical queue name of shard i of queue under salt.
func ShardName(queue string, i int, salt string) string {
	return queue + string(ShardSep) + strconv.Itoa(i) + "." + salt
}

// ParseShard is the inverse of ShardName: the queue and index of a shard's
// physical name. ok is false unless name is exactly what ShardName builds
// from a valid queue name, an index in 0..MaxShards-1 and a salt of
// lower-case base 36 digits, each number in its one spelling (no leading
// zeros).
func ParseShard(name string) (queue string, i int, ok bool) {
	tilde := strings.IndexByte(name, ShardSep)
	if tilde <= 0 {
		return "", 0, false
	}
	queue, rest := name[:tilde], name[tilde+1:]
	idx, salt, found := strings.Cut(rest, ".")
	if !found || !canonicalNumber(idx, 10) || !canonicalNumber(salt, 36) || len(salt) > maxSaltLen || len(idx) > 4 {
		return "", 0, false
	}
	i, err := strconv.Atoi(idx)
	if err != nil || i >= MaxShards {
		return "", 0, false
	}
	if ValidateName("queue", queue) != nil {
		return "", 0, false
	}
	return queue, i, true
}

// canonicalNumber reports whether s is a number in base 10 or 36 (lower
// case) as strconv.FormatInt spells it: digits only, no sign, no leading
// zero unless s is "0".
func canonicalNumber(s string, base int) bool {
	if s == "" || (s[0] == '0' && len(s) > 1) {
		return false
	}
	for j := 0; j < len(s); j++ {
		c := s[j]
		if c >= '0' && c <= '9' || base == 36 && c >= 'a' && c <= 'z' {
			continue
		}
		return false
	}
	return true
}

// IsShard reports whether name is a shard's physical queue name.
func IsShard(name string) bool {
	_, _, ok := ParseShard(name)
	return ok
}

// ValidatePhysicalQueue checks a queue name that internal code builds keys
// for: a public queue name (ValidateName) or a shard's physical name
// (ParseShard). Names a user gives go through ValidateName, which refuses
// '~'.
func ValidatePhysicalQueue(name string) error {
	if strings.IndexByte(name, ShardSep) < 0 {
		return ValidateName("queue", name)
	}
	if IsShard(name) {
		return nil
	}
	if len(name) > MaxPhysicalLen {
		return fmt.Errorf("queue name %.32q... is %d bytes long, the limit for a shard's name is %d: %w", name, len(name), MaxPhysicalLen, ErrInvalidName)
	}
	return fmt.Errorf("queue name %q has %q but is not a shard's name <queue>~<index>.<salt> (index 0..%d, salt lower-case base 36): %w",
		name, ShardSep, MaxShards-1, ErrInvalidName)
}

// Slots is the number of hash slots of a Redis Cluster.
const Slots = 16384

// crcTable is the CRC16-XMODEM (CCITT polynomial 0x1021, initial value 0)
// table that Redis Cluster hashes keys with.
var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// crcUpdate continues the CRC16 crc over s.
func crcUpdate(crc uint16, s string) uint16 {
	for j := 0; j < len(s); j++ {
		crc = crc<<8 ^ crcTable[byte(crc>>8)^s[j]]
	}
	return crc
}

// CRC16 is the CRC16-XMODEM of s, as Redis Cluster computes it.
func CRC16(s string) uint16 { return crcUpdate(0, s) }

// Slot is the hash slot of key, as Redis Cluster computes it: of the text
// between the first '{' and the first '}' after it when that is not empty,
// else of the whole key.
func Slot(key string) int {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if n := strings.IndexByte(key[open+1:], '}'); n > 0 {
			key = key[open+1 : open+1+n]
		}
	}
	return int(CRC16(key) % Slots)
}

// QueueSlot is the hash slot of every key of queue (its tag "q:<queue>").
func QueueSlot(queue string) int { return int(CRC16("q:"+queue) % Slots) }

// SlotRange is the slots Start..End, both included.
type SlotRange struct{ Start, End int }

// ErrPlacement is wrapped by the errors of PlaceShards.
var ErrPlacement = errors.New("cannot place the shards")

// PlaceShards chooses the physical names of the n shards of queue for a
// cluster whose masters serve the slot ranges of masters (one element per
// master; a Redis that is not a cluster is one master with 0..16383).
//
// The masters are taken in order of their first slot, and shard i goes to
// master i mod M: the shards cover the masters evenly (n/M each, or one
// more). Within a master's slots, its shards' target slots are evenly
// apart, starting at an offset that CRC16(queue) rotates, so that
// queues of the same shard count do not all use the same slots. Each
// shard's salt is the smallest (as a number) base 36 one whose tag lands
// on its target slot. The answer depends on its arguments only.
func PlaceShards(queue string, n int, masters [][]SlotRange) ([]string, error) {
	if err := ValidateName("queue", queue); err != nil {
		return nil, err
	}
	if n < 1 || n > MaxShards {
		return nil, fmt.Errorf("queue %q: %d shards; a sharded queue has 1 to %d: %w", queue, n, MaxShards, ErrPlacement)
	}
	if len(masters) == 0 {
		return nil, fmt.Errorf("queue %q: the cluster has no master serving slots: %w", queue, ErrPlacement)
	}
	type master struct {
		ranges []SlotRange
		size   int
	}
	ms := make([]master, 0, len(masters))
	seen := make([]bool, Slots)
	for mi, rs := range masters {
		if len(rs) == 0 {
			return nil, fmt.Errorf("queue %q: master %d serves no slot: %w", queue, mi, ErrPlacement)
		}
		rs = slices.Clone(rs)
		slices.SortFunc(rs, func(a, b SlotRange) int { return a.Start - b.Start })
		m := master{ranges: rs}
		for _, r := range rs {
			if r.Start < 0 || r.End >= Slots || r.Start > r.End {
				return nil, fmt.Errorf("queue %q: slot range %d-%d is not within 0-%d: %w", queue, r.Start, r.End, Slots-1, ErrPlacement)
			}
			for s := r.Start; s <= r.End; s++ {
				if seen[s] {
					return nil, fmt.Errorf("queue %q: slot %d is served by two masters: %w", queue, s, ErrPlacement)
				}
				seen[s] = true
			}
			m.size += r.End - r.Start + 1
		}
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b master) int { return a.ranges[0].Start - b.ranges[0].Start })

	rot := int(CRC16(queue))
	names := make([]string, n)
	for i := range n {
		m := ms[i%len(ms)]
		j := i / len(ms)                                 // this shard's rank on its master
		count := (n - i%len(ms) + len(ms) - 1) / len(ms) // the master's shards
		off := (rot + j*m.size/count) % m.size
		target := -1
		for _, r := range m.ranges {
			w := r.End - r.Start + 1
			if off < w {
				target = r.Start + off
				break
			}
			off -= w
		}
		salt, err := saltFor(queue, i, target)
		if err != nil {
			return nil, err
		}
		names[i] = ShardName(queue, i, salt)
	}
	return names, nil
}

// saltFor returns the smallest base 36 salt that puts shard i of queue on
// slot target.
func saltFor(queue string, i, target int) (string, error) {
	prefix := crcUpdate(0, "q:"+ShardName(queue, i, ""))
	var buf [maxSaltLen]byte
	limit := int64(1)
	for range maxSaltLen {
		limit *= 36
	}
	for k := int64(0); k < limit; k++ {
		salt := strconv.AppendInt(buf[:0], k, 36)
		crc := prefix
		for _, c := range salt {
			crc = crc<<8 ^ crcTable[byte(crc>>8)^c]
		}
		if int(crc%Slots) == target {
			return string(salt), nil
		}
	}
	return "", fmt.Errorf("queue %q: no salt of up to %d characters puts shard %d on slot %d: %w", queue, maxSaltLen, i, target, ErrPlacement)
}

// ShardRegistry is the hash of the sharded queues: field = queue name,
// value = its shard set (store.ShardSet, msgpack through the codec gate).
const ShardRegistry = Prefix + ":{reg}:shards"

// JumpShard is the shard, of n, that key belongs to: the jump consistent
// hash of Lamping and Veach over FNV-1a (64 bits) of key. Every process
// computes the same, and when n grows to m only the keys that move to the
// new shards n..m-1 change shard (a fraction (m-n)/m of them): the others
// keep theirs, with their order and their ids' records.
func JumpShard(key string, n int) int {
	h := uint64(14695981039346656037)
	for j := 0; j < len(key); j++ {
		h ^= uint64(key[j])
		h *= 1099511628211
	}
	b, j := int64(-1), int64(0)
	for j < int64(n) {
		b = j
		h = h*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((h>>33)+1)))
	}
	return int(b)
}

// GrowShards returns the physical names of shards len(have)..n-1 of queue,
// which has the shards have (ShardName's, in index order), for a cluster
// whose masters serve the slot ranges of masters (as for PlaceShards).
// Each new shard goes to the master that serves the fewest of the queue's
// shards so far (the first in slot order on a tie), on a slot of that
// master that no shard of the queue uses, spread like PlaceShards'. The
// answer depends on its arguments only.
func GrowShards(queue string, have []string, n int, masters [][]SlotRange) ([]string, error) {
	if err := ValidateName("queue", queue); err != nil {
		return nil, err
	}
	if n <= len(have) || n > MaxShards {
		return nil, fmt.Errorf("queue %q: grow %d shards to %d; the number must grow, to at most %d: %w", queue, len(have), n, MaxShards, ErrPlacement)
	}
	if len(masters) == 0 {
		return nil, fmt.Errorf("queue %q: the cluster has no master serving slots: %w", queue, ErrPlacement)
	}
	owner := make([]int, Slots)
	for i := range owner {
		owner[i] = -1
	}
	ms := make([][]SlotRange, len(masters))
	for mi, rs := range masters {
		rs = slices.Clone(rs)
		ms[mi] = rs
		slices.SortFunc(rs, func(a, b SlotRange) int { return a.Start - b.Start })
	}
	slices.SortFunc(ms, func(a, b []SlotRange) int {
		if len(a) == 0 || len(b) == 0 {
			return len(a) - len(b)
		}
		return a[0].Start - b[0].Start
	})
	size := make([]int, len(ms))
	for mi, rs := range ms {
		if len(rs) == 0 {
			return nil, fmt.Errorf("queue %q: master %d serves no slot: %w", queue, mi, ErrPlacement)
		}
		for _, r := range rs {
			if r.Start < 0 || r.End >= Slots || r.Start > r.End {
				return nil, fmt.Errorf("queue %q: slot range %d-%d is not within 0-%d: %w", queue, r.Start, r.End, Slots-1, ErrPlacement)
			}
			for s := r.Start; s <= r.End; s++ {
				if owner[s] >= 0 {
					return nil, fmt.Errorf("queue %q: slot %d is served by two masters: %w", queue, s, ErrPlacement)
				}
				owner[s] = mi
			}
			size[mi] += r.End - r.Start + 1
		}
	}
	count := make([]int, len(ms))
	used := map[int]bool{}
	for i, name := range have {
		if q, j, ok := ParseShard(name); !ok || q != queue || j != i {
			return nil, fmt.Errorf("queue %q: shard %d is %q, not a name of that shard: %w", queue, i, name, ErrPlacement)
		}
		s := QueueSlot(name)
		used[s] = true
		if owner[s] >= 0 {
			count[owner[s]]++
		}
	}
	rot := int(CRC16(queue))
	out := make([]string, 0, n-len(have))
	for i := len(have); i < n; i++ {
		mi := 0
		for k := range ms {
			if count[k] < count[mi] {
				mi = k
			}
		}
		// An offset that the queue's name rotates and the master's count
		// of shards moves along, stepped past the slots in use.
		off := (rot + (count[mi]*2+1)*size[mi]/(2*(count[mi]+1))) % size[mi]
		target := -1
		for step := 0; step < size[mi] && target < 0; step++ {
			o := (off + step) % size[mi]
			for _, r := range ms[mi] {
				w := r.End - r.Start + 1
				if o < w {
					if s := r.Start + o; !used[s] {
						target = s
					}
					break
				}
				o -= w
			}
		}
		if target < 0 {
			target = slotAt(ms[mi], off%size[mi]) // every slot used: share one
		}
		salt, err := saltFor(queue, i, target)
		if err != nil {
			return nil, err
		}
		used[target] = true
		count[mi]++
		out = append(out, ShardName(queue, i, salt))
	}
	return out, nil
}

// slotAt is the off-th slot of the ranges rs.
func slotAt(rs []SlotRange, off int) int {
	for _, r := range rs {
		w := r.End - r.Start + 1
		if off < w {
			return r.Start + off
		}
		off -= w
	}
	return rs[0].Start
}
