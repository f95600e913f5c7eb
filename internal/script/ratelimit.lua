-- ratelimit.lua: one call of a distributed rate limiter, a token bucket kept
-- as its "theoretical arrival time" (GCRA): the bucket is full when tat <= now,
-- each event moves tat one emission interval (interval) further, and an
-- event fits while tat - now stays within burst intervals. Time is Redis'
-- TIME in microseconds. The bucket stores "tat,last" (last: the time of the
-- call that wrote it): a clock found to have stepped back moves tat back as
-- much, so waits do not grow by the step, and one that jumps forward refills
-- the bucket to burst at most; neither negative nor runaway counts appear.
-- The keys expire when the bucket would be full again.
-- A call that writes leaves its reply under its op marker (KEYS[3], when
-- given), for as long as the caller's client may resend it: a resend finds
-- the marker and returns that reply, changing nothing, so a call whose reply
-- was lost takes, reserves, queues or refunds once however often it is sent.
-- Once the caller has read a call's reply its client sends that call no
-- more, so the caller hands the markers of such calls to its next call on
-- the bucket (KEYS[4..]), which cuts them to a short grace (ARGV[8]) for a
-- try still on its way; PEXPIRE is idempotent, and a no-op on a marker gone.
-- KEYS[1]  the bucket, KEYS[2] its turn schedule (mode 'take'), KEYS[3]
--          optional: the call's op marker, KEYS[4..] optional: ARGV[7] op
--          markers of earlier calls whose replies the caller read
-- ARGV[1]  emission interval in µs (per / rate), ARGV[2] burst, ARGV[3] n,
-- ARGV[4]  mode:
--          'allow'   take n only if they fit now;
--          'reserve' take n now or in the future (the caller waits the
--                    returned delay);
--          'refund'  give back n taken earlier (never past a full bucket);
--          'take'    as allow, but fair to callers that wait: a refused
--                    caller gets a turn (a time, returned) and presents it
--                    when it comes back (ARGV[5]). Turns are handed out one
--                    interval apart after those outstanding; while turns
--                    are outstanding a caller without one is queued behind
--                    them, and a caller with one that is refused (it came
--                    back early or another took the token) gets the next
--                    time the tokens are there, not the back of the queue.
--                    Turns nobody came back for are forgotten once the
--                    bucket has been full for an interval.
-- ARGV[5]  the caller's turn in µs ('take'; 0: none), ARGV[6] how long the
--          op marker lives (ms; with KEYS[3]), ARGV[7] how many earlier
--          markers follow KEYS[3] (absent: 0), ARGV[8] the grace they are
--          cut to (ms)
-- Returns: {1 taken / 0 refused, µs to wait (refused: until n would fit, or
-- the turn; reserve: until the reservation is due), events that still fit
-- now, the turn given (µs, 'take' refused; else 0), 1 if the call left its
-- op marker / 0 if it wrote nothing and left none}
if KEYS[3] then
  local prev = redis.call('GET', KEYS[3])
  if prev then
    local r = {}
    for v in string.gmatch(prev, '[^,]+') do r[#r + 1] = tonumber(v) end
    return r
  end
end
local done = tonumber(ARGV[7]) or 0
if math.max(#KEYS - 3, 0) ~= done then
  return redis.error_reply('ERR ratelimit.lua: ARGV[7] names ' .. done .. ' earlier markers, KEYS holds ' .. (#KEYS - 3))
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local mode = ARGV[4]
local span = burst * interval

local function read(key)
  local raw = redis.call('GET', key)
  if not raw then return 0, 0 end
  local v, last = string.match(raw, '^([%d%.]+),([%d%.]+)$')
  v, last = tonumber(v) or 0, tonumber(last) or now
  if last > now then
    v = v - (last - now)
    last = now
  end
  return v, last
end

local wrote = false
local function write(key, v)
  wrote = true
  if v <= now then
    redis.call('DEL', key)
    return
  end
  redis.call('SET', key, string.format('%.0f,%.0f', v, now), 'PX', math.ceil((v - now) / 1000) + 1)
end

local function left(v)
  local l = math.floor((span - (v - now)) / interval)
  if l < 0 then return 0 end
  return l
end

local function call()
  local stored = read(KEYS[1])
  local tat = math.max(stored, now)

  if mode == 'refund' then
    local v = tat - n * interval
    write(KEYS[1], v)
    return {1, 0, left(math.max(v, now)), 0}
  end

  local new = tat + n * interval
  -- How far past the burst the n events would reach. Computed from the small
  -- differences, not from new - now: at today's µs (about 1.8e15) a double
  -- is exact only to a quarter µs, and an interval that is not a whole
  -- number of µs (60/s: 16666.67) would leave over a hair above 0 with an
  -- empty bucket, refusing every event.
  local over = (tat - now) + (n - burst) * interval
  if mode == 'reserve' then
    write(KEYS[1], new)
    return {1, math.ceil(math.max(over, 0)), left(new), 0}
  end
  if mode == 'allow' then
    if over > 0 then return {0, math.ceil(over), left(tat), 0} end
    write(KEYS[1], new)
    return {1, 0, left(new), 0}
  end

  -- take
  local turn = tonumber(ARGV[5]) or 0
  local sched, handed = read(KEYS[2])
  if stored + interval <= now and sched > 0 and handed + interval <= now then
    -- The bucket has been full for a whole interval and no turn was handed
    -- out for as long: the turns due meanwhile went unused, so those still
    -- outstanding are forgotten (their holders, should they come, present
    -- their turns all the same). While turns are being handed out (a flood
    -- of callers, slow under load) they are kept: forgetting them then would
    -- hand out the same times twice, and the holders would collide at every
    -- one, each collision a trip through the queue.
    sched = 0
    redis.call('DEL', KEYS[2])
  end
  local function queue()
    local w = math.max(sched, now + math.max(over, 0))
    write(KEYS[2], w + n * interval)
    return {0, math.ceil(w - now), left(tat), math.floor(w)}
  end
  if turn == 0 and sched > now then return queue() end
  if over <= 0 then
    write(KEYS[1], new)
    return {1, 0, left(new), 0}
  end
  if turn == 0 then return queue() end
  local w = now + over
  return {0, math.ceil(w - now), left(tat), math.floor(w)}
end

local res = call()
-- After the call's own writes: at maxmemory Redis refuses a script whose
-- first write is one that may grow memory (SET), and PEXPIRE first would
-- let every later write through.
for i = 4, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ARGV[8])
end
res[5] = 0
if KEYS[3] and wrote then
  res[5] = 1
  local f = {}
  for j, v in ipairs(res) do f[j] = string.format('%.0f', v) end
  redis.call('SET', KEYS[3], table.concat(f, ','), 'PX', ARGV[6])
end
return res
