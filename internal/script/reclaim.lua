-- reclaim.lua: takes over attempts whose lease ended (idle past the lease) with
-- XAUTOCLAIM, and reports each one's new delivery count (its attempt token).
-- A resend must report what the first run took: XAUTOCLAIM reset their idle
-- time, so a second XAUTOCLAIM would skip them and leave them, unknown to the
-- worker, under its own consumer. The first run that takes anything keeps the
-- ids and tokens it took in an op marker; a run that finds the marker reports
-- those of them still held by this consumer under the same token and within
-- the lease, and claims nothing more.
-- KEYS[1]  the queue's stream, KEYS[2] the call's op marker
-- ARGV[1]  consumer group, ARGV[2] consumer name, ARGV[3] lease (min idle) ms,
-- ARGV[4]  scan cursor, ARGV[5] how many entries at most, ARGV[6] the
--          marker's lifetime, ms (the client's resend window)
-- Returns: {next cursor, {{entry id, envelope or '' when the entry has no 'm' field,
-- delivery count}, ...}}. Entries deleted from the stream while pending cannot run:
-- they are acked.
local stream, group, consumer, marker = KEYS[1], ARGV[1], ARGV[2], KEYS[2]
local lease = tonumber(ARGV[3])

local function envelope(fields)
  for j = 1, #fields, 2 do
    if fields[j] == 'm' then return fields[j + 1] end
  end
  return ''
end

local seen = redis.call('GET', marker)
if seen then
  local cursor, out = nil, {}
  for id, dlv in string.gmatch(seen, '(%S+) (%S+)') do
    if not cursor then
      cursor = id -- the first pair is the cursor and a placeholder
    else
      local p = redis.call('XPENDING', stream, group, id, id, 1)
      local e = redis.call('XRANGE', stream, id, id)
      if p[1] and p[1][2] == consumer and tonumber(p[1][4]) == tonumber(dlv)
          and tonumber(p[1][3]) < lease and e[1] then
        out[#out + 1] = {id, envelope(e[1][2]), p[1][4]}
      end
    end
  end
  return {cursor, out}
end

local r = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out = {}
local gone = {}
for _, e in ipairs(r[2]) do
  local id, fields = e[1], e[2]
  if not fields then
    gone[#gone + 1] = id
  else
    local p = redis.call('XPENDING', stream, group, id, id, 1)
    if p[1] then
      out[#out + 1] = {id, envelope(fields), p[1][4]}
    end
  end
end
if r[3] then
  for _, id in ipairs(r[3]) do gone[#gone + 1] = id end
end
if #gone > 0 then
  redis.call('XACK', stream, group, unpack(gone))
end
if #out > 0 then
  local m = {r[1] .. ' -'}
  for _, o in ipairs(out) do m[#m + 1] = o[1] .. ' ' .. o[3] end
  redis.call('SET', marker, table.concat(m, ' '), 'PX', ARGV[6])
end
return {r[1], out}
