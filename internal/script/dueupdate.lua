-- dueupdate.lua: after a coordinator moved a queue's due tasks, sets the
-- queue's entry in the due index to its next due time (or removes it when
-- none is left), unless the queue was marked (duemark.lua) since the
-- coordinator read it: then what it read may miss the new task, and the
-- entry is left for the next pass.
-- KEYS[1]  the due index, KEYS[2] the generations
-- ARGV[1]  queue name, ARGV[2] the generation read before the queue's
--          tasks were, ARGV[3] the next due ms, or -1 for none
-- Returns: 1 updated, 0 left alone.
local g = redis.call('HGET', KEYS[2], ARGV[1]) or '0'
if g ~= ARGV[2] then return 0 end
if tonumber(ARGV[3]) < 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
