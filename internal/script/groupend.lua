-- groupend.lua: counts ended members of one group (see group_count in
-- lib.lua); the entry point for members whose end reached the group through
-- an outbox (another slot), and for sealing.
-- KEYS[1]  group hash, KEYS[2] open set, KEYS[3] order, KEYS[4] held set,
-- KEYS[5]  continuations, KEYS[6] home queue's outbox, KEYS[7] its hooks,
-- KEYS[8]  its stats hash (field ia: held members of its InvokeAll groups)
-- KEYS[9]  the group's progress hash (keys.Queue.GroupProgress)
-- ARGV[1]  home queue's done channel, ARGV[2] public group id, ARGV[3] the
--          group's own id, then pairs: member name, final state
--          ('succeeded', 'dead', 'cancelled', 'failed')
-- Returns: {state of the group, 1 if the outbox may hold what its end wrote};
-- state '' when the group is unknown (expired): nothing was done. A group
-- that has ended answers 1 whether or not this call ended it: a resent call
-- (its reply lost) finds the members counted already and must still send
-- its caller to drain the outbox the first run wrote.
local ends = {}
for i = 4, #ARGV do ends[#ends + 1] = ARGV[i] end
local st, wrote = group_count({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]}, ARGV[1], ARGV[2], ARGV[3], ends)
if st ~= '' and st ~= 'running' then wrote = 1 end
return {st, wrote}
