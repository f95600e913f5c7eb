-- duemark.lua: records that a queue has a task due at a time, in the index
-- coordinators sleep on, if that is earlier than what the index holds; and
-- always counts the mark in the queue's generation, so that a coordinator
-- that read the queue's tasks before this mark does not then raise or drop
-- its entry (dueupdate.lua).
-- KEYS[1]  the due index (sorted set: queue → earliest due, Unix ms),
-- KEYS[2]  the generations (hash: queue → marks so far)
-- ARGV[1]  queue name, ARGV[2] due ms
-- Returns: 1 when the queue's entry moved earlier (wake the coordinators),
-- else 0.
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if cur and tonumber(cur) <= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
