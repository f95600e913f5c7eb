package codec

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The gate for what handlers report with worker.ReportProgress,
// as Redis keeps it (decimal text in a hash, keys.Queue.Progress, and one
// packed value per member in a group's, keys.Queue.GroupProgress).

// ErrBadProgress is wrapped by every error DecodeProgress and
// DecodeProgressSum return: the bytes read are not what this library
// writes.
var ErrBadProgress = errors.New("codec: malformed progress record")

// ProgressRecord is a task's report as read: done and total units, the
// attempt that reported it, and when it was written (Unix ms, Redis time).
type ProgressRecord struct {
	Done, Total int64
	Attempt     int
	AtMs        int64
}

// DecodeProgress checks and decodes the fields done, total, attempt and at
// of a task's progress hash (as HMGET returns them: absent fields are nil).
// A hash with none of them is no report (ok false, no error); one with
// some missing, or any that is not a decimal integer in range (counts at
// least 0, done at most total when total is set, attempt at least 1, a
// positive time), is refused with an error naming the field.
func DecodeProgress(done, total, attempt, at any) (rec ProgressRecord, ok bool, err error) {
	if done == nil && total == nil && attempt == nil && at == nil {
		return ProgressRecord{}, false, nil
	}
	field := func(name string, v any, min int64) (int64, error) {
		s, isStr := v.(string)
		if !isStr {
			return 0, fmt.Errorf("field %s is missing: %w", name, ErrBadProgress)
		}
		n, perr := strconv.ParseInt(s, 10, 64)
		if perr != nil || n < min || strings.HasPrefix(s, "+") {
			return 0, fmt.Errorf("field %s is %.32q, want a decimal integer of at least %d: %w", name, s, min, ErrBadProgress)
		}
		return n, nil
	}
	if rec.Done, err = field("done", done, 0); err != nil {
		return ProgressRecord{}, false, err
	}
	if rec.Total, err = field("total", total, 0); err != nil {
		return ProgressRecord{}, false, err
	}
	a, err := field("attempt", attempt, 1)
	if err != nil {
		return ProgressRecord{}, false, err
	}
	if a > 1<<31-1 {
		return ProgressRecord{}, false, fmt.Errorf("field attempt is %d, out of range: %w", a, ErrBadProgress)
	}
	rec.Attempt = int(a)
	if rec.AtMs, err = field("at", at, 1); err != nil {
		return ProgressRecord{}, false, err
	}
	if rec.Total > 0 && rec.Done > rec.Total {
		return ProgressRecord{}, false, fmt.Errorf("done %d exceeds total %d: %w", rec.Done, rec.Total, ErrBadProgress)
	}
	return rec, true, nil
}

// DecodeProgressSum checks and decodes one of a group's progress sums (the
// fields ~d and ~t; nil when absent, which reads as 0): a decimal integer
// of at least 0.
func DecodeProgressSum(name string, v any) (int64, error) {
	if v == nil {
		return 0, nil
	}
	s, isStr := v.(string)
	if !isStr {
		return 0, fmt.Errorf("sum %s is a %T: %w", name, v, ErrBadProgress)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || strings.HasPrefix(s, "+") {
		return 0, fmt.Errorf("sum %s is %.32q, want a decimal integer of at least 0: %w", name, s, ErrBadProgress)
	}
	return n, nil
}
