-- leaselapse.lua (test kit only): makes the attempts pending under a consumer
-- look as if their lease had ended, so that other workers' next reclaim takes
-- them over at once. Each entry keeps its consumer and its delivery count (its
-- attempt token); only its idle time is set to the lease. Safe to run twice: a
-- second run sets the same idle time again, and skips what another consumer
-- took over meanwhile (it is no longer pending under this one).
-- KEYS[1]  the queue's stream
-- ARGV[1]  consumer group, ARGV[2] consumer name, ARGV[3] lease ms,
-- ARGV[4]  how many entries at most
-- Returns: the ids of the entries whose idle time was set.
local stream, group, consumer, lease = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', stream) == 0 then return {} end
local ok, ps = pcall(redis.call, 'XPENDING', stream, group, '-', '+', ARGV[4], consumer)
if not ok then return {} end -- no consumer group yet: nothing pending
local out = {}
for _, p in ipairs(ps) do
  local id, dlv = p[1], p[4]
  redis.call('XCLAIM', stream, group, consumer, 0, id, 'IDLE', lease, 'RETRYCOUNT', dlv, 'JUSTID')
  out[#out + 1] = id
end
return out
