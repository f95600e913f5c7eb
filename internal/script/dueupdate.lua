-- dueupdate.lua: after a coordinator moved a queue's due tasks, sets the
-- queue's entry in the due index to its next due time (or removes it when
-- none is left), unless someone marked an earlier time meanwhile.
-- KEYS[1]  the due index
-- ARGV[1]  queue name, ARGV[2] the score the coordinator acted on, ARGV[3]
--          the next due ms, or -1 for none
-- Returns: 1 updated, 0 left alone.
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not cur or tonumber(cur) ~= tonumber(ARGV[2]) then return 0 end
if tonumber(ARGV[3]) < 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
