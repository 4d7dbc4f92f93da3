-- setops: the exchange's small set operations, one round trip each.
-- KEYS[1] a set; ARGV[1] 'add' (then members; returns the size), 'members' (returns them) or
-- 'remove' (then members; returns how many were removed).
local op = ARGV[1]
if op == 'members' then return redis.call('SMEMBERS', KEYS[1]) end
local removed = 0
for i = 2, #ARGV, 1000 do
    local last = math.min(i + 999, #ARGV)
    if op == 'add' then
        redis.call('SADD', KEYS[1], unpack(ARGV, i, last))
    else
        removed = removed + redis.call('SREM', KEYS[1], unpack(ARGV, i, last))
    end
end
if op == 'add' then return redis.call('SCARD', KEYS[1]) end
return removed
