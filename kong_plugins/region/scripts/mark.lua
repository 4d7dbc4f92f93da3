-- mark: add usage marks (global rules whose usage changed) to one shard of the dirty index.
-- KEYS[1] the shard's dirty set; ARGV: the marks. Returns the set's size.
for i = 1, #ARGV, 1000 do
    redis.call('SADD', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return redis.call('SCARD', KEYS[1])
