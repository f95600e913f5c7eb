-- claim.lua: takes a claim (a key one process holds for a while, to do a
-- duty alone) for a token, if nobody holds it. A take sent again after a
-- lost reply finds the claim held by its own token and is told it holds it
-- (a bare SET NX would answer no and lose the turn).
-- KEYS[1]  the claim
-- ARGV[1]  the caller's token (new for each take), ARGV[2] how long the
--          claim is held, ms
-- Returns: 1 held by the token, 0 held by another.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
