-- ratelimit.lua: one call of a distributed rate limiter, a token bucket kept
-- as its "theoretical arrival time" (GCRA): the bucket is full when tat <= now,
-- each event moves tat one emission interval (interval) further, and an
-- event fits while tat - now stays within burst intervals. Time is Redis'
-- TIME in microseconds; a clock that steps back never refills the bucket (tat
-- stays ahead of now) and one that jumps forward refills it to burst at
-- most, so neither negative nor runaway counts can appear. The key expires
-- when the bucket would be full again.
-- KEYS[1]  the bucket, KEYS[2] its wake-up schedule (mode 'take')
-- ARGV[1]  emission interval in µs (per / rate), ARGV[2] burst, ARGV[3] n,
-- ARGV[4]  mode: 'allow' (take n only if they fit now), 'reserve' (take n
--          now or in the future: the caller waits the returned delay), or
--          'take' (as allow, and when refused, give the caller a wake-up
--          time of its own: the schedule hands out times one emission
--          interval apart, from when n would fit, so waiters wake in turn
--          instead of all at once; the tokens are taken only at wake-up)
-- Returns: {1 taken / 0 refused, µs to wait (refused: until n would fit, or
-- the wake-up time; reserve: until the reservation is due), events that
-- still fit now}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new = tat + n * interval
local span = burst * interval
local over = new - now - span
if ARGV[4] ~= 'reserve' and over > 0 then
  local left = math.floor((span - (tat - now)) / interval)
  if left < 0 then left = 0 end
  if ARGV[4] == 'take' then
    local sched = tonumber(redis.call('GET', KEYS[2]) or '0')
    local wake = now + over
    if sched > wake then wake = sched end
    local nxt = wake + n * interval
    redis.call('SET', KEYS[2], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
    over = wake - now
  end
  return {0, math.ceil(over), left}
end
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1)
if over < 0 then over = 0 end
local left = math.floor((span - (new - now)) / interval)
if left < 0 then left = 0 end
return {1, math.ceil(over), left}
