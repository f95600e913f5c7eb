package keys

// What handlers report with worker.ReportProgress.

// Progress is the hash of what the handler of the task with key key last
// reported: done, total, attempt (the attempt that reported it), at (when
// it was written, Unix ms in Redis time), and the fence of the run that
// wrote it: seq (the delivery's ordinal within its attempt) and w, n (the
// run's id and its write count). It expires with the task's retention,
// counted from its last write, and goes with the task's records.
func (q Queue) Progress(key string) string { return q.tag + "pg:" + key }

// GroupProgress is the hash of what the members of group id reported, in
// the group's home slot: per member (its task id) the fields of Progress
// packed in one value, "<done> <total> <attempt> <seq> <w> <n> <at>", and
// the running sums "~d" and "~t" of the members' done and total. It lives
// as long as the group's hash.
func (q Queue) GroupProgress(id string) string { return q.tag + "gp:" + id }
