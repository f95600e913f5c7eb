package store

import (
	"strconv"
	"strings"
)

// entryRange returns the lowest and the highest entry id of items, for
// complete.lua's one XPENDING over the batch ("" and "" when no item has an
// id of the form <ms>-<seq>; the script then fences each item on its own).
func entryRange(items []Completion) (lo, hi string) {
	var loMs, loSeq, hiMs, hiSeq uint64
	for _, c := range items {
		ms, seq, ok := parseEntryID(c.EntryID)
		if !ok {
			continue
		}
		if lo == "" || ms < loMs || ms == loMs && seq < loSeq {
			lo, loMs, loSeq = c.EntryID, ms, seq
		}
		if hi == "" || ms > hiMs || ms == hiMs && seq > hiSeq {
			hi, hiMs, hiSeq = c.EntryID, ms, seq
		}
	}
	return lo, hi
}

// parseEntryID parses a stream entry id as Redis writes it: <ms>-<seq>, in
// decimal without leading zeros.
func parseEntryID(id string) (ms, seq uint64, ok bool) {
	a, b, found := strings.Cut(id, "-")
	if !found || !canonDecimal(a) || !canonDecimal(b) {
		return 0, 0, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return ms, seq, err1 == nil && err2 == nil
}

func canonDecimal(s string) bool {
	if s == "" || len(s) > 1 && s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
