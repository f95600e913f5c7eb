-- purgedead.lua: deletes dead tasks for good, each only while it is still
-- dead (a task retried in the meantime is left alone). A call leaves a
-- marker under its op id holding its answer: a resend finds it and answers
-- the same (it would otherwise find the tasks gone and answer 0).
-- KEYS[1]  dead-letter sorted set, KEYS[2] the marker of this call,
-- KEYS[2+i] task hash of ARGV[1+i], then KEYS[2+n+i] its progress hash
--          (keys.Queue.Progress; n the number of tasks)
-- ARGV[1]  how long the marker lives (ms: the client's resend window and a
--          margin), ARGV[1+i] task key
-- Returns: how many were deleted.
local m = redis.call('GET', KEYS[2])
if m then return tonumber(m) end
local n = 0
local tasks = #ARGV - 1
for i = 2, #ARGV do
  local tk = KEYS[1 + i]
  if redis.call('HGET', tk, 'st') == 'dead' then
    redis.call('DEL', tk, KEYS[1 + tasks + i])
    n = n + 1
  end
  if redis.call('HGET', tk, 'st') ~= 'dead' then
    -- Gone or alive again: either way no longer a dead letter.
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
redis.call('SET', KEYS[2], n, 'PX', ARGV[1])
return n
