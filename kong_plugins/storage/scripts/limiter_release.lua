-- release: end a request's concurrency leases. KEYS: the concurrency keys; ARGV[1]: lease id.
-- Returns how many leases were still held (an expired lease is already gone).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local released = 0
for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    released = released + redis.call('ZREM', KEYS[i], ARGV[1])
end
return released
