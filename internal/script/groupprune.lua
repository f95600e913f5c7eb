-- groupprune.lua: drops from a queue's index of groups the ids whose group
-- hash is gone (expired with its retention); an id whose group was made
-- again meanwhile stays. Running it twice leaves the same state.
-- KEYS[1]  the queue's index of groups, KEYS[1+i] the hash of group ARGV[i]
-- ARGV[i]  a group's own id
-- Returns: how many ids it dropped.
local n = 0
for i = 1, #ARGV do
  if redis.call('EXISTS', KEYS[1 + i]) == 0 then
    n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return n
