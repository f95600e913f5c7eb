-- parttake.lua: takes everything appended to a partitioner so far into a
-- snapshot of its own, and lists the snapshot as pending until the groups
-- made from it have started (patterns.Partitioner's Flush).
-- KEYS[1]  the partitioner's list, KEYS[2] the snapshot's list, KEYS[3] the
--          pending snapshots (sorted set by when they were taken)
-- ARGV[1]  snapshot id, ARGV[2] now ms (the caller's)
-- Returns: 1 taken, 0 nothing was appended.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
