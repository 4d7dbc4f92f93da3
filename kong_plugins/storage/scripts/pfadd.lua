-- Add elements to a HyperLogLog, TTL rule as incr.lua; returns 1 when the estimate changed.
-- KEYS[1] HyperLogLog; ARGV[1] ttl in ms (0: none), ARGV[2] "1" to restart the TTL, then elements
local changed = 0
-- unpack() is bounded by Lua's stack (LUAI_MAXCSTACK 8000): add in slices.
for i = 3, #ARGV, 1000 do
    local last = math.min(i + 999, #ARGV)
    changed = math.max(changed, redis.call('PFADD', KEYS[1], unpack(ARGV, i, last)))
end
if #ARGV < 3 then
    changed = redis.call('PFADD', KEYS[1])
end
local ttl = tonumber(ARGV[1])
if ttl > 0 and (ARGV[2] == '1' or redis.call('PTTL', KEYS[1]) < 0) then
    redis.call('PEXPIRE', KEYS[1], ttl)
end
return changed
