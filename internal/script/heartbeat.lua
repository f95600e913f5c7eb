-- heartbeat.lua: extends the leases of the attempts a worker holds in one queue by
-- resetting their idle time, each fenced by its attempt token, and reports
-- cancel requests (a fallback for a missed control message).
-- KEYS[1]  the queue's stream; KEYS[1+i] the task hash of pair i (1-based)
-- ARGV[1]  consumer group, ARGV[2] consumer name, ARGV[3] the lease, ms (0:
--          no bound): an entry idle that long has lost its lease (another
--          worker may take it over, and its own worker has cancelled the
--          run), so a heartbeat that comes later, delayed in a stall, does
--          not renew it
-- ARGV[4..] pairs: entry id, delivery count
-- Returns: one integer per pair, 1 extended, 2 extended but cancel requested,
-- 0 lease lost (taken over, gone, or idle past the lease).
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local lease = tonumber(ARGV[3])
local res = {}
for i = 4, #ARGV, 2 do
  local eid, dlv = ARGV[i], ARGV[i + 1]
  local p = redis.call('XPENDING', stream, group, eid, eid, 1)
  if p[1] and p[1][2] == consumer and tonumber(p[1][4]) == tonumber(dlv)
      and (lease == 0 or tonumber(p[1][3]) < lease) then
    redis.call('XCLAIM', stream, group, consumer, 0, eid, 'RETRYCOUNT', dlv, 'JUSTID')
    if redis.call('HEXISTS', KEYS[1 + (i - 2) / 2], 'cx') == 1 then
      res[#res + 1] = 2
    else
      res[#res + 1] = 1
    end
  else
    res[#res + 1] = 0
  end
end
return res
