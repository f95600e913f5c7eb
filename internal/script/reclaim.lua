-- reclaim.lua: takes over attempts whose lease ended (idle past the lease) with
-- XAUTOCLAIM, and reports each one's new delivery count (its attempt token).
-- KEYS[1]  the queue's stream
-- ARGV[1]  consumer group, ARGV[2] consumer name, ARGV[3] lease (min idle) ms,
-- ARGV[4]  scan cursor, ARGV[5] how many entries at most
-- Returns: {next cursor, {{entry id, envelope or '' when the entry has no 'm' field,
-- delivery count}, ...}}. Entries deleted from the stream while pending cannot run:
-- they are acked.
local stream, group = KEYS[1], ARGV[1]
local r = redis.call('XAUTOCLAIM', stream, group, ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out = {}
local gone = {}
for _, e in ipairs(r[2]) do
  local id, fields = e[1], e[2]
  if not fields then
    gone[#gone + 1] = id
  else
    local env = ''
    for j = 1, #fields, 2 do
      if fields[j] == 'm' then env = fields[j + 1] end
    end
    local p = redis.call('XPENDING', stream, group, id, id, 1)
    if p[1] then
      out[#out + 1] = {id, env, p[1][4]}
    end
  end
end
if r[3] then
  for _, id in ipairs(r[3]) do gone[#gone + 1] = id end
end
if #gone > 0 then
  redis.call('XACK', stream, group, unpack(gone))
end
return {r[1], out}
