-- comparedel.lua: deletes a claim key only if it still holds the caller's
-- token (a claim that expired and was taken by another process stays).
-- KEYS[1]  the claim, ARGV[1] the caller's token
-- Returns: 1 deleted, 0 not the caller's.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
