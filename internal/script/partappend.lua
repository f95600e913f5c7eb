-- partappend.lua: appends items to a partitioner's list
-- (patterns.Partitioner's Append). A call leaves a marker under its op id
-- for the client's resend window: a resend finds it, appends nothing and
-- answers as the first run did.
-- KEYS[1]  the partitioner's list, KEYS[2] the marker of this append
-- ARGV[1]  how long the marker lives (ms: the client's resend window and a
--          margin), ARGV[2..] the items (msgpack each), in order
-- Returns: the number of items the call appended (the same on a resend).
local n = #ARGV - 1
if redis.call('EXISTS', KEYS[2]) == 1 then return n end
-- In chunks: unpack is bounded by Lua's C stack.
for i = 2, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return n
