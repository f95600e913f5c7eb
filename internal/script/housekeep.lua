-- housekeep.lua: trims acknowledged history from a queue's stream and removes
-- consumers that hold nothing and have been idle for long.
-- KEYS[1]  the queue's stream, KEYS[2] its stats hash
-- ARGV[1]  consumer group, ARGV[2] idle ms after which an empty consumer is removed
-- Returns: {entries trimmed, consumers removed}
-- Trimming is by MINID: below the oldest pending entry, or past the last entry
-- delivered to the group when nothing is pending; never by length, so no
-- unacknowledged or undelivered entry is ever removed.
-- Every entry trimmed had been read and acknowledged, so it leaves the count
-- of those (stats field ack), which is then exact again when nothing is
-- pending: 0, every entry read having gone. A queue whose count is not known
-- to be exact (field ax unset: its group was made by an earlier version)
-- gets it established then, or, while entries are pending, by counting the
-- entries from the oldest pending one to the last one read when there are
-- at most 1000 of them. Writes to the counters are pcall'd: at Redis' memory
-- limit, a refused one must not stop the trim.
local stream, group = KEYS[1], ARGV[1]
if redis.call('EXISTS', stream) == 0 then return {0, 0} end
local minid = nil
local s = redis.call('XPENDING', stream, group)
if tonumber(s[1]) > 0 then
  minid = s[2]
else
  local last = last_delivered(stream, group)
  local ms, seq = string.match(last or '', '^(%d+)%-(%d+)$')
  if ms then minid = ms .. '-' .. tostring(tonumber(seq) + 1) end
end
local trimmed = 0
if minid then
  trimmed = redis.call('XTRIM', stream, 'MINID', minid)
end
local pending = tonumber(s[1])
local c = redis.call('HMGET', KEYS[2], 'ack', 'ax')
if pending == 0 then
  if minid and (c[1] ~= '0' or c[2] ~= '1') then
    redis.pcall('HSET', KEYS[2], 'ack', 0, 'ax', 1)
  end
else
  if trimmed > 0 then redis.pcall('HINCRBY', KEYS[2], 'ack', -trimmed) end
  if c[2] ~= '1' then
    local last = last_delivered(stream, group)
    local r = redis.call('XRANGE', stream, s[2], last, 'COUNT', 1001)
    if #r <= 1000 and #r >= pending then
      redis.pcall('HSET', KEYS[2], 'ack', #r - pending, 'ax', 1)
    end
  end
end
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local name, pending, idle = nil, nil, nil
  for j = 1, #c, 2 do
    if c[j] == 'name' then name = c[j + 1] end
    if c[j] == 'pending' then pending = tonumber(c[j + 1]) end
    if c[j] == 'idle' then idle = tonumber(c[j + 1]) end
  end
  if name and pending == 0 and idle and idle > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, name)
    removed = removed + 1
  end
end
return {trimmed, removed}
