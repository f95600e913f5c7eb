-- kidsadd.lua: records child task ids under their parent, the set kept for a
-- while after the last addition (see store.AddKids).
-- KEYS[1]  the parent's kids set
-- ARGV[1]  the set's lifetime in ms, ARGV[2..] the children's task ids
-- Returns: the number of ids not recorded before. Run twice, it leaves the
-- same set (the lifetime starts again).
local added = 0
local chunk = 1000
for i = 2, #ARGV, chunk do
  added = added + redis.call('SADD', KEYS[1], unpack(ARGV, i, math.min(i + chunk - 1, #ARGV)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return added
