package ratelimit

import (
	"strconv"
	"sync"
	"time"
)

// markerGrace is how long the op marker of a call lives once the Limiter
// has read the call's reply and a later call on the bucket has cut it:
// go-redis sends a call no more once it read a reply, so what is left to
// cover is a try of it still on its way (written on a connection since
// closed, and not yet run by Redis).
const markerGrace = 2 * time.Second

// Bounds of what a Limiter remembers: the markers of calls whose replies it
// read and that no later call has cut yet. A marker beyond them keeps its
// full lifetime, which is only memory in Redis.
const (
	maxMarksPerBucket = 64
	maxMarks          = 1 << 14
)

// opID is a call's op id: its marker is "<bucket>:op:<id in base 36>".
type opID [2]uint64

func (id opID) key(bk string) string {
	b := make([]byte, 0, len(bk)+4+26)
	b = append(b, bk...)
	b = append(b, ":op:"...)
	b = strconv.AppendUint(b, id[0], 36)
	b = strconv.AppendUint(b, id[1], 36)
	return string(b)
}

// marks holds, per bucket, the op ids of a Limiter's calls whose replies it
// read: the next call on the bucket takes them and cuts their markers to
// markerGrace. Every one of them left a marker (a call that wrote nothing
// left none and is not kept).
type marks struct {
	mu    sync.Mutex
	by    map[string]*bucketMarks // by bucket key
	n     int                     // ids held, in all buckets
	swept time.Time
}

type bucketMarks struct {
	ids []opID
	at  time.Time // when the newest was added: its marker lives MarkerTTL from about then
}

// take removes and returns the ids held for bucket bk, but none whose
// markers have expired anyway.
func (m *marks) take(bk string, ttl time.Duration) []opID {
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.by[bk]
	if b == nil {
		return nil
	}
	delete(m.by, bk)
	m.n -= len(b.ids)
	if time.Since(b.at) > ttl {
		return nil
	}
	return b.ids
}

// put adds ids to those held for bk, within the bounds.
func (m *marks) put(bk string, ttl time.Duration, ids ...opID) {
	if len(ids) == 0 {
		return
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.n+len(ids) > maxMarks && now.Sub(m.swept) > time.Second {
		// Full: forget the buckets not called since their markers
		// expired (at most once a second, the sweep reads them all).
		m.swept = now
		for k, b := range m.by {
			if now.Sub(b.at) > ttl {
				delete(m.by, k)
				m.n -= len(b.ids)
			}
		}
	}
	if m.by == nil {
		m.by = make(map[string]*bucketMarks)
	}
	b := m.by[bk]
	if b == nil {
		b = &bucketMarks{}
		m.by[bk] = b
	}
	k := min(len(ids), maxMarksPerBucket-len(b.ids), maxMarks-m.n)
	if k <= 0 {
		if len(b.ids) == 0 {
			delete(m.by, bk)
		}
		return
	}
	b.ids = append(b.ids, ids[:k]...)
	b.at = now
	m.n += k
}
