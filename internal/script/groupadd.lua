-- groupadd.lua: adds members to an open group. A member is added once ever:
-- a replay, or a second call completing one that failed halfway, does not
-- reopen a member that ended meanwhile.
-- KEYS[1]  group hash, KEYS[2] open-member set, KEYS[3] order (every member
--          ever, scored by index), KEYS[4] held members (InvokeAll),
-- KEYS[5]  the home queue's stats hash (field ia counts the held members;
--          the group hash gets ic = 1, so that its members leave the count)
-- ARGV[1]  how long a group never sealed is kept, ms
-- ARGV[2..] per member three values: index, member name (a task id or a
--          group id), '1' if held until a slot frees
-- Returns: the group's state ('running' unless it ended already, e.g. fail
-- fast, or 'cancelling' once Cancel was called; then nothing was added and
-- the caller stops adding).
local h = redis.call('HMGET', KEYS[1], 'st', 'cx', 'sealed')
local st = h[1]
if st ~= 'running' then return st or 'unknown' end
if h[2] then return 'cancelling' end
for i = 2, #ARGV, 3 do
  local idx, m = ARGV[i], ARGV[i + 1]
  if redis.call('ZADD', KEYS[3], 'NX', idx, m) == 1 then
    redis.call('SADD', KEYS[2], m)
    if ARGV[i + 2] == '1' and redis.call('ZADD', KEYS[4], idx, m) == 1 then
      redis.call('HINCRBY', KEYS[5], 'ia', 1)
      redis.call('HSET', KEYS[1], 'ic', '1')
    end
  end
end
if h[3] ~= '1' then
  -- Not sealed yet: these go with the group if it never is.
  for k = 3, 4 do
    if redis.call('PTTL', KEYS[k]) == -1 then redis.call('PEXPIRE', KEYS[k], ARGV[1]) end
  end
end
return 'running'
