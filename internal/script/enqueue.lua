-- enqueue.lua: adds a batch of tasks to one queue; a replay of the same batch changes nothing.
-- KEYS[1]  the queue's stream
-- KEYS[2]  the marker of this batch operation (op id chosen by the client)
-- KEYS[3..] per task that carries a user key, in batch order: its task hash and
--           its result key
-- ARGV[1]  consumer group name (unused: the client creates the group once)
-- ARGV[2]  how long the op marker lives, ms
-- ARGV[3]  n, the number of tasks
-- ARGV[4..] per task two values: user key ('' for an auto-keyed task), envelope
-- Returns: a flat array, per task: task key (the entry id for auto keys), 1 if the
-- key already named a task (nothing was added) else 0. A replay returns the first
-- run's answer.
local prev = redis.call('GET', KEYS[2])
if prev then
  return cjson.decode(prev)
end
local out = {}
local ki = 3
for i = 0, tonumber(ARGV[3]) - 1 do
  local key = ARGV[4 + 2 * i]
  local env = ARGV[5 + 2 * i]
  if key == '' then
    out[#out + 1] = redis.call('XADD', KEYS[1], '*', 'm', env)
    out[#out + 1] = 0
  else
    local tk, fk = KEYS[ki], KEYS[ki + 1]
    ki = ki + 2
    if redis.call('EXISTS', tk, fk) > 0 then
      out[#out + 1] = key
      out[#out + 1] = 1
    else
      local id = redis.call('XADD', KEYS[1], '*', 'm', env)
      redis.call('HSET', tk, 'st', 'pending', 'e', id)
      out[#out + 1] = key
      out[#out + 1] = 0
    end
  end
end
redis.call('SET', KEYS[2], cjson.encode(out), 'PX', ARGV[2])
return out
