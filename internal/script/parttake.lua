-- parttake.lua: takes everything appended to a partitioner so far into a
-- snapshot of its own, and lists the snapshot as pending until the groups
-- made from it have started (patterns.Partitioner's Flush). The snapshot id
-- is the call's op id: a take leaves a marker under it, and a resend that
-- finds the marker answers as the first run did (the items are then in the
-- snapshot, not gone).
-- KEYS[1]  the partitioner's list, KEYS[2] the snapshot's list, KEYS[3] the
--          pending snapshots (sorted set by when they were taken), KEYS[4]
--          the marker of this take
-- ARGV[1]  snapshot id, ARGV[2] now ms (the caller's), ARGV[3] how long the
--          marker lives (ms: the client's resend window and a margin)
-- Returns: 1 taken, 0 nothing was appended.
if redis.call('EXISTS', KEYS[4]) == 1 then return 1 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('SET', KEYS[4], '1', 'PX', ARGV[3])
return 1
