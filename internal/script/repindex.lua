-- repindex.lua: compare-and-set of one entry of the repeat index (name →
-- "<queue>|<token>").
-- KEYS[1]  the index
-- ARGV[1]  name, ARGV[2] the value expected ('' absent), ARGV[3] the new
--          value ('' deletes)
-- Returns: 1 set, 0 the entry no longer held the expected value.
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if cur ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
return 1
