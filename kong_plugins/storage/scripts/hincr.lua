-- Add to several fields of a hash, TTL rule as incr.lua; returns the new values (strings).
-- KEYS[1] hash; ARGV[1] ttl in ms (0: none), ARGV[2] "1" to restart the TTL,
-- then field, increment pairs
local replies = {}
for i = 3, #ARGV, 2 do
    replies[#replies + 1] = redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
end
local ttl = tonumber(ARGV[1])
if ttl > 0 and (ARGV[2] == '1' or redis.call('PTTL', KEYS[1]) < 0) then
    redis.call('PEXPIRE', KEYS[1], ttl)
end
return replies
