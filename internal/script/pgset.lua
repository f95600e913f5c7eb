-- pgset.lua: records what a task's handler reported (worker.ReportProgress)
-- in the task's progress hash (keys.Queue.Progress), fenced so that an
-- older run never overwrites a newer one's report: a run is older when its
-- attempt is lower, or its attempt is the same and its delivery ordinal
-- (seq) lower; within one run (w), a write is older when its count (n) is
-- not higher. A resent call finds its own write (same w, same n) and
-- changes nothing, so running it twice leaves the same state.
-- KEYS[1]  the task's progress hash
-- ARGV[1]  done, ARGV[2] total, ARGV[3] attempt, ARGV[4] seq, ARGV[5] run
--          id (w), ARGV[6] the run's write count (n), ARGV[7] retention ms
--          (the hash's lifetime from this write; 1 .. 2^53-1)
-- Returns: 1 when the report is recorded (also for a replay of this same
-- call), 0 when a newer run's report is there (nothing written).
local k = KEYS[1]
local a, s, n = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
local cur = redis.call('HMGET', k, 'attempt', 'seq', 'w', 'n')
local ca, cs = tonumber(cur[1]), tonumber(cur[2])
if ca then
  if a < ca or (a == ca and s < cs) then return 0 end
  if a == ca and s == cs and cur[3] == ARGV[5] and n <= (tonumber(cur[4]) or 0) then
    if n == tonumber(cur[4]) then return 1 end
    return 0
  end
end
redis.call('HSET', k, 'done', ARGV[1], 'total', ARGV[2], 'attempt', ARGV[3], 'seq', ARGV[4],
  'w', ARGV[5], 'n', ARGV[6], 'at', now_ms())
redis.call('PEXPIRE', k, ARGV[7])
return 1
