-- heartbeat: record that a source reached this region now (server clock, ms) and return every
-- source's last time. KEYS[1] the region's health hash; ARGV[1] field ('' to only read).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
if ARGV[1] ~= '' then
    redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', now))
end
local fields = redis.call('HGETALL', KEYS[1])
fields[#fields + 1] = 'now'
fields[#fields + 1] = string.format('%d', now)
return fields
