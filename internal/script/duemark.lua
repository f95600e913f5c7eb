-- duemark.lua: records that a queue has a task due at a time, in the index
-- coordinators sleep on, if that is earlier than what the index holds.
-- KEYS[1]  the due index (sorted set: queue → earliest due, Unix ms)
-- ARGV[1]  queue name, ARGV[2] due ms
-- Returns: 1 when the queue's entry moved earlier (wake the coordinators),
-- else 0.
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if cur and tonumber(cur) <= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
