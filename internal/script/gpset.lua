-- gpset.lua: records a group member's report (worker.ReportProgress) in its
-- group's progress hash (keys.Queue.GroupProgress), in the group's home
-- slot, with the fence of pgset.lua, and keeps the hash's sums of done and
-- total (fields ~d and ~t) by the change of the member's values. The hash
-- lives as long as the group's: it takes the group hash's lifetime (none
-- while the group runs sealed; group_count in lib.lua sets the retention
-- on both when the group ends). A resent call finds its own write and
-- changes nothing.
-- KEYS[1]  the group's progress hash, KEYS[2] the group's hash
-- ARGV[1]  member (its task id), ARGV[2] done, ARGV[3] total, ARGV[4]
--          attempt, ARGV[5] seq, ARGV[6] run id (w), ARGV[7] the run's
--          write count (n)
-- Returns: 1 when the report is recorded (also for a replay), 0 when a
-- newer run's report is there or the group is gone (nothing written).
local gp, g, m = KEYS[1], KEYS[2], ARGV[1]
local ttl = redis.call('PTTL', g)
if ttl == -2 then return 0 end
local a, s, n = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[7])
local od, ot = 0, 0
local cur = progress_member(redis.call('HGET', gp, m))
if cur then
  if a < cur.a or (a == cur.a and s < cur.s) then return 0 end
  if a == cur.a and s == cur.s and cur.w == ARGV[6] and n <= cur.n then
    if n == cur.n then return 1 end
    return 0
  end
  od, ot = cur.d, cur.t
end
local d, t = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('HSET', gp, m, string.format('%d %d %d %d %s %d %d', d, t, a, s, ARGV[6], n, now_ms()))
if d ~= od then redis.call('HINCRBY', gp, '~d', string.format('%d', d - od)) end
if t ~= ot then redis.call('HINCRBY', gp, '~t', string.format('%d', t - ot)) end
if ttl > 0 then
  redis.call('PEXPIRE', gp, ttl)
else
  redis.call('PERSIST', gp)
end
return 1
