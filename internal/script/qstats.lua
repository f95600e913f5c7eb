-- qstats.lua: reads the counts of one queue at one moment. It writes
-- nothing. Every command is O(1) but one HMGET of 60 fields.
-- KEYS[1]  the queue's stream, KEYS[2] its stats hash, KEYS[3] its history
--          hash, KEYS[4] scheduled set, KEYS[5] and KEYS[6] the scheduled
--          set's retrying and held indexes, KEYS[7] dead-letter set, KEYS[8]
--          pause flag
-- ARGV[1]  consumer group
-- Returns: {stream length, 1 if the group exists else 0, pending entries,
-- the group's last delivered id ('' without a group), its entries-read and
-- lag as XINFO GROUPS reports them (-1 for none), waiting (-1 when it is
-- not known exactly: a group made by an earlier version), scheduled,
-- retrying, parked, waiting in a partition, held by InvokeAll groups,
-- dead, 1 if paused else 0, attempts ended, of them failed, attempts ended
-- in the last 60 whole seconds (this one included), of them failed}.
local stream = KEYS[1]
local len = redis.call('XLEN', stream)
local found, pending, last, read, lag = 0, 0, '', -1, -1
if len > 0 or redis.call('EXISTS', stream) == 1 then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local f = {}
    for j = 1, #g, 2 do f[g[j]] = g[j + 1] end
    if f['name'] == ARGV[1] then
      found, pending, last = 1, tonumber(f['pending']), f['last-delivered-id']
      if type(f['entries-read']) == 'number' then read = f['entries-read'] end
      if type(f['lag']) == 'number' then lag = f['lag'] end
    end
  end
end
local c = redis.call('HMGET', KEYS[2], 'ack', 'ax', 'pw', 'ia', 'n', 'f')
local waiting = -1
if found == 0 then
  waiting = len -- nothing read yet
elseif c[2] == '1' then
  waiting = len - pending - (tonumber(c[1]) or 0)
  if waiting < 0 then waiting = -1 end
end
local sched = redis.call('ZCARD', KEYS[4])
local retrying = redis.call('ZCARD', KEYS[5])
local parked = redis.call('ZCARD', KEYS[6])
local now = redis.call('TIME')
local sec = tonumber(now[1])
local fields = {}
for i = 0, 59 do fields[#fields + 1] = 's' .. i end
local n1, f1 = 0, 0
for _, v in ipairs(redis.call('HMGET', KEYS[3], unpack(fields))) do
  if v then
    local s, x, y = string.match(v, '^(%d+):(%d+):(%d+)$')
    s = tonumber(s)
    if s and s > sec - 60 and s <= sec then
      n1, f1 = n1 + tonumber(x), f1 + tonumber(y)
    end
  end
end
return {len, found, pending, last, read, lag, waiting,
  math.max(sched - retrying - parked, 0), retrying, parked,
  math.max(tonumber(c[3]) or 0, 0), math.max(tonumber(c[4]) or 0, 0),
  redis.call('ZCARD', KEYS[7]), redis.call('EXISTS', KEYS[8]),
  tonumber(c[5]) or 0, tonumber(c[6]) or 0, n1, f1}
