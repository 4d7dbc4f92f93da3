-- audit_range: events of a region's audit stream after an id, and the active index.
-- KEYS[1] the audit stream, KEYS[2] the active index; ARGV[1] exclusive start id ('0-0' for all),
-- ARGV[2] max events, ARGV[3] 'active' to return the active index instead (entry id, until pairs
-- with until in the future).
if ARGV[3] == 'active' then
    local time = redis.call('TIME')
    local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
    return redis.call('ZRANGEBYSCORE', KEYS[2], string.format('(%.6f', now), '+inf', 'WITHSCORES')
end
return redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
