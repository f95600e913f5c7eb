package upload

import (
	"math/bits"
	"sync"
)

// maxSmallBuf bounds the buffer a single PUT of a file is read into: a
// file up to it (and up to the multipart threshold) is read once, hashed
// and sent from memory; a larger single PUT is read twice from the file
// (hash, then send) and never held.
const maxSmallBuf = 8 << 20

// bufs pools the buffers files are read into: a small file's whole
// content, or one part of a multipart upload. A buffer goes back to the
// pool only after the request that sent it succeeded (the store read it
// all); after a failure it is left to the garbage collector, since the
// HTTP transport may still be reading a request body it gave up on.
var bufs bufPool

// bufPool holds byte slices by capacity: a power of two from 64 KiB up to
// maxSmallBuf, the exact size above (a part size).
type bufPool struct {
	m sync.Map // capacity -> *sync.Pool of *[]byte
}

func bufClass(n int) int {
	switch {
	case n <= 64<<10:
		return 64 << 10
	case n <= maxSmallBuf:
		return 1 << bits.Len(uint(n-1))
	}
	return n
}

// get returns a buffer of n bytes (its capacity the class's).
func (p *bufPool) get(n int) *[]byte {
	c := bufClass(n)
	if sp, ok := p.m.Load(c); ok {
		if b, _ := sp.(*sync.Pool).Get().(*[]byte); b != nil {
			*b = (*b)[:n]
			return b
		}
	}
	b := make([]byte, n, c)
	return &b
}

// put returns b for reuse.
func (p *bufPool) put(b *[]byte) {
	c := cap(*b)
	if c != bufClass(c) {
		return // not one of ours
	}
	sp, ok := p.m.Load(c)
	if !ok {
		sp, _ = p.m.LoadOrStore(c, &sync.Pool{})
	}
	sp.(*sync.Pool).Put(b)
}
