-- adopt.lua: takes up again entries pending under this worker's own consumer
-- that the worker does not know it holds (the reply of the read or reclaim
-- that delivered them was lost, and its resend did not return them). Each is
-- fenced by its attempt token, which it keeps: the delivery that was lost
-- never ran, so taking it up counts no new one. Its idle time is reset: its
-- lease starts now. An entry idle for the lease or longer is left to
-- reclaim.lua (which counts a delivery); one deleted from the stream is acked.
-- A resend finds the entries it took with their idle time reset, and skips
-- them: the worker's next round takes them up.
-- KEYS[1]  the queue's stream
-- ARGV[1]  consumer group, ARGV[2] consumer name, ARGV[3] least idle time, ms,
-- ARGV[4]  the lease, ms, ARGV[5..] pairs: entry id, delivery count
-- Returns: {{entry id, envelope or '' when the entry has no 'm' field,
-- delivery count}, ...}, for the entries taken up.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local minIdle, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for i = 5, #ARGV, 2 do
  local id, dlv = ARGV[i], ARGV[i + 1]
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  if p[1] and p[1][2] == consumer and tonumber(p[1][4]) == tonumber(dlv)
      and tonumber(p[1][3]) >= minIdle and tonumber(p[1][3]) < lease then
    local e = redis.call('XRANGE', stream, id, id)
    if e[1] then
      redis.call('XCLAIM', stream, group, consumer, 0, id, 'RETRYCOUNT', dlv, 'JUSTID')
      local env = ''
      local fields = e[1][2]
      for j = 1, #fields, 2 do
        if fields[j] == 'm' then env = fields[j + 1] end
      end
      out[#out + 1] = {id, env, p[1][4]}
    else
      redis.call('XACK', stream, group, id)
    end
  end
end
return out
