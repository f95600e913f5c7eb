-- heartbeat.lua: extends the leases of the attempts a worker holds in one queue by
-- resetting their idle time, each fenced by its attempt token.
-- KEYS[1]  the queue's stream
-- ARGV[1]  consumer group, ARGV[2] consumer name
-- ARGV[3..] pairs: entry id, delivery count
-- Returns: one integer per pair, 1 extended, 0 lease lost (taken over or gone).
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local res = {}
for i = 3, #ARGV, 2 do
  local eid, dlv = ARGV[i], ARGV[i + 1]
  local p = redis.call('XPENDING', stream, group, eid, eid, 1)
  if p[1] and p[1][2] == consumer and tonumber(p[1][4]) == tonumber(dlv) then
    redis.call('XCLAIM', stream, group, consumer, 0, eid, 'RETRYCOUNT', dlv, 'JUSTID')
    res[#res + 1] = 1
  else
    res[#res + 1] = 0
  end
end
return res
