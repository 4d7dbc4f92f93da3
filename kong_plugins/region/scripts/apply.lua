-- apply: set or delete one denylist key (verdict or revocation) with its TTL.
-- KEYS[1] the key; ARGV[1] 'set' or 'del', ARGV[2] value, ARGV[3] until (seconds since the
-- epoch). A 'set' whose until has passed on this server's clock is not written (returns 0).
if ARGV[1] == 'del' then return redis.call('DEL', KEYS[1]) end
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = math.floor(tonumber(ARGV[3]) * 1000) - now_ms
if ttl <= 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
return 1
