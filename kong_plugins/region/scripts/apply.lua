-- apply: set or delete one denylist key (verdict or revocation) with its TTL.
-- KEYS[1] the key; ARGV[1] 'set' or 'del', ARGV[2] value, ARGV[3] TTL in ms (relative: decisions
-- are timed by Kong's request clock, which replays may set in the past). A 'set' with a TTL of
-- zero or less is not written (returns 0).
if ARGV[1] == 'del' then return redis.call('DEL', KEYS[1]) end
local ttl = tonumber(ARGV[3])
if ttl <= 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
return 1
