-- partdone.lua: drops a partitioner's snapshot once the groups made from it
-- have started (patterns.Partitioner's Flush): unlists it and deletes its
-- items. Run twice, it leaves the same state.
-- KEYS[1]  the pending snapshots (sorted set), KEYS[2] the snapshot's list
-- ARGV[1]  snapshot id
-- Returns: 1 when the snapshot was still listed, else 0.
local n = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return n
