-- drain: hand one shard of the dirty index to the exchange without losing marks on a crash.
-- KEYS[1] the shard's dirty set, KEYS[2] its processing set (same hash tag).
-- A processing set left by a worker that died is served again first; otherwise the dirty set is
-- renamed (atomically: marks added from now on go to a fresh dirty set). The caller deletes the
-- processing set once every region got the usage. Returns the marks being processed.
if redis.call('EXISTS', KEYS[2]) == 0 then
    if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
    redis.call('RENAME', KEYS[1], KEYS[2])
end
return redis.call('SMEMBERS', KEYS[2])
