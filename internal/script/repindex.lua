-- repindex.lua: compare-and-set of one entry of the repeat index (name →
-- "<queue>|<token>"). An entry that already holds the new value counts as
-- set: so a resend of a set that was applied answers 1 again (a token is
-- given to one definition only, so no other write leaves that value but
-- one of the same declaration's).
-- KEYS[1]  the index
-- ARGV[1]  name, ARGV[2] the value expected ('' absent), ARGV[3] the new
--          value ('' deletes)
-- Returns: 1 set (or held already), 0 the entry held another value.
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if cur == ARGV[3] then return 1 end
if cur ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
return 1
