-- purgedead.lua: deletes dead tasks for good, each only while it is still
-- dead (a task retried in the meantime is left alone).
-- KEYS[1]  dead-letter sorted set; KEYS[1+i] task hash of ARGV[i]
-- ARGV[i]  task key
-- Returns: how many were deleted.
local n = 0
for i = 1, #ARGV do
  local tk = KEYS[1 + i]
  if redis.call('HGET', tk, 'st') == 'dead' then
    redis.call('DEL', tk)
    n = n + 1
  end
  if redis.call('HGET', tk, 'st') ~= 'dead' then
    -- Gone or alive again: either way no longer a dead letter.
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return n
