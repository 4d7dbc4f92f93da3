-- Increment a counter and give it a TTL: once (a window opened by the first increment) or on
-- every call (expire after inactivity).
-- KEYS[1] counter; ARGV[1] amount, ARGV[2] ttl in ms (0: none), ARGV[3] "1" to restart the TTL
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if ttl > 0 and (ARGV[3] == '1' or redis.call('PTTL', KEYS[1]) < 0) then
    redis.call('PEXPIRE', KEYS[1], ttl)
end
return value
