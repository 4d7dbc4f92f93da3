-- merge: store usage snapshots of a global rule from other sources, recompute its remote usage.
-- KEYS[1] the rule's inbox hash, KEYS[2] its remote-usage hash (same hash tag as the rule's key).
-- ARGV[1] version (sender's clock, us), ARGV[2] lowest bucket still in any window, ARGV[3] TTL
-- (ms), then per source: source id, number of pairs, then bucket, count pairs.
-- Snapshots are absolute per-bucket counts, so sending one twice, or late, never counts twice:
-- a source's snapshot replaces its previous one unless that one is newer. The remote hash is
-- the per-bucket sum over every source (the other regions, and the other lanes of this region).
-- Inbox fields: "<source>|v" = version, "<source>|<bucket>" = count.
local inbox, remote = KEYS[1], KEYS[2]
local version, lo, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local current = redis.call('HGETALL', inbox)
local stored = {}
for j = 1, #current, 2 do stored[current[j]] = current[j + 1] end
local i = 4
while i <= #ARGV do
    local source, pairs_n = ARGV[i], tonumber(ARGV[i + 1])
    local prefix = source .. '|'
    local seen = tonumber(stored[prefix .. 'v'] or '-1')
    if version >= seen then
        for f in pairs(stored) do
            if string.sub(f, 1, #prefix) == prefix then
                redis.call('HDEL', inbox, f)
                stored[f] = nil
            end
        end
        stored[prefix .. 'v'] = ARGV[1]
        redis.call('HSET', inbox, prefix .. 'v', ARGV[1])
        for p = 0, pairs_n - 1 do
            local b, c = ARGV[i + 2 + 2 * p], ARGV[i + 3 + 2 * p]
            if tonumber(b) >= lo and tonumber(c) > 0 then
                stored[prefix .. b] = c
                redis.call('HSET', inbox, prefix .. b, c)
            end
        end
    end
    i = i + 2 + 2 * pairs_n
end
local sums, stale = {}, {}
for f, v in pairs(stored) do
    local b = string.match(f, '|(%-?%d+)$')
    if b then
        b = tonumber(b)
        if b < lo then
            stale[#stale + 1] = f
        else
            sums[b] = (sums[b] or 0) + tonumber(v)
        end
    end
end
if #stale > 0 then redis.call('HDEL', inbox, unpack(stale)) end
redis.call('DEL', remote)
local flat = {}
for b, c in pairs(sums) do
    flat[#flat + 1] = string.format('%d', b)
    flat[#flat + 1] = string.format('%d', c)
end
if #flat > 0 then
    redis.call('HSET', remote, unpack(flat))
    redis.call('PEXPIRE', remote, ttl)
end
redis.call('PEXPIRE', inbox, ttl)
return #flat / 2
