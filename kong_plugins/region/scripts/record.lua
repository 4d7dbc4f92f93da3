-- record: one denylist event into a region's audit stream and active index (one hash tag).
-- KEYS[1] the audit stream, KEYS[2] the active index (zset: entry id -> until, seconds).
-- ARGV[1] max audit length (approximate trimming), ARGV[2] entry id, ARGV[3] until (0 removes the
-- entry from the active index), then field, value pairs of the audit event.
-- Returns the event's stream id.
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
if tonumber(ARGV[3]) > 0 then
    redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
else
    redis.call('ZREM', KEYS[2], ARGV[2])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.6f', now))
return id
