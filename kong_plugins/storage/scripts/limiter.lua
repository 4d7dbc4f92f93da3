-- check_and_consume: decide every rule of one request, then consume all of them or none.
--
-- Time is the server's (TIME), in microseconds, so every gateway node agrees on it.
-- KEYS[i] (i <= n) is rule i's key; after them, one more key per global rule (kinds 4 and 5), in
-- rule order: the rule's remote-usage hash. ARGV[1] is the lease id for concurrency rules, then
-- four values per rule: kind, limit, param, cost (so n = (#ARGV - 1) / 4).
--   kind 1 "rate"        GCRA as a leaky-bucket meter; param = period (us). State: the string
--                        "<level> <t>" (level in cost units, t = us of the last update). The
--                        bucket drains at limit/period; a request fits when level + cost <= limit.
--   kind 2 "calendar"    fixed UTC window; param = window length (us, epoch aligned). State: the
--                        string "<window number> <consumed in that window>".
--   kind 3 "concurrency" in-flight leases; param = lease TTL (us). State: zset lease -> expiry (us).
--   kind 4 "global"      sliding window across regions; param = period (us), cut into GLOBAL_BUCKETS
--                        buckets of period / GLOBAL_BUCKETS. State: hash bucket number -> cost used
--                        here; the remote hash holds the other regions' usage per bucket (written
--                        by the region exchange). The window counts the current bucket and the
--                        GLOBAL_BUCKETS before it, a span of at least one period: never less than a
--                        true sliding window, so this region never over-admits on its own.
--   kind 5 "global calendar" like kind 2 across regions: one bucket per calendar window.
-- Reply: five integers per rule: allowed (0/1), remaining, reset (us), retry after (us), window
-- (kinds 4 and 5: the bucket the cost went to, for adjust).
-- Mirrored by the Python twin in kong_plugins/storage/limiter.py: keep them in step.
-- Strings rather than hashes for kinds 1-2: one MGET reads every rule and one SET PX writes each,
-- which keeps a 3-rule decision at 5 commands (Redis >= 5 replicates scripts by effects, so
-- writing after TIME needs no redis.replicate_commands()).

local GLOBAL_BUCKETS = 20
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local EPS = 1e-6
local lease = ARGV[1]
local n = (#ARGV - 1) / 4
local reply = {}
local states = {}
local all_ok = true
local values = redis.call('MGET', unpack(KEYS, 1, n))
local remote_index = n

for i = 1, n do
    local b = 2 + (i - 1) * 4
    local kind, limit, param, cost = tonumber(ARGV[b]), tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
    local key = KEYS[i]
    local ok, remaining, reset, retry, window = 0, 0, 0, 0, 0
    if kind == 1 then
        local level, last = 0, now
        if values[i] then
            local l, t = string.match(values[i], '^(%S+) (%S+)$')
            level, last = tonumber(l), tonumber(t)
        end
        local rate = limit / param
        local elapsed = now - last
        if elapsed < 0 then elapsed = 0 end
        level = level - elapsed * rate
        if level < 0 then level = 0 end
        if level + cost <= limit + EPS then
            ok = 1
            local new = level + cost
            remaining = math.floor(limit - new + EPS)
            reset = math.ceil(new / rate)
            states[i] = {new, math.max(last, now), reset}
        else
            remaining = math.floor(limit - level + EPS)
            reset = math.ceil(level / rate)
            if cost <= limit then
                retry = math.ceil((level + cost - limit) / rate)
            else
                retry = reset
            end
        end
    elseif kind == 2 then
        window = math.floor(now / param)
        local used = 0
        if values[i] then
            local w, u = string.match(values[i], '^(%S+) (%S+)$')
            if tonumber(w) == window then used = tonumber(u) end
        end
        reset = (window + 1) * param - now
        if used + cost <= limit then
            ok = 1
            remaining = limit - used - cost
            states[i] = {window, used + cost, reset}
        else
            remaining = limit - used
            retry = reset
        end
    elseif kind == 4 or kind == 5 then
        local width, lo = param, 0
        if kind == 4 then width = math.floor(param / GLOBAL_BUCKETS) end
        local cur = math.floor(now / width)
        if kind == 4 then lo = cur - GLOBAL_BUCKETS else lo = cur end
        window = cur
        remote_index = remote_index + 1
        local per, stale, used = {}, {}, 0
        local fields = redis.call('HGETALL', key)
        for j = 1, #fields, 2 do
            local b, c = tonumber(fields[j]), tonumber(fields[j + 1])
            if b < lo then
                stale[#stale + 1] = fields[j]
            else
                per[b] = (per[b] or 0) + c
                used = used + c
            end
        end
        local remote = redis.call('HGETALL', KEYS[remote_index])
        for j = 1, #remote, 2 do
            local b, c = tonumber(remote[j]), tonumber(remote[j + 1])
            if b and c and b >= lo then
                per[b] = (per[b] or 0) + c
                used = used + c
            end
        end
        local buckets = {}
        for b in pairs(per) do buckets[#buckets + 1] = b end
        table.sort(buckets)
        local span = width
        if kind == 4 then span = (GLOBAL_BUCKETS + 1) * width end
        if used + cost <= limit then
            ok = 1
            remaining = limit - used - cost
            local last = cur
            if cost == 0 and #buckets > 0 then last = buckets[#buckets] end
            if cost == 0 and #buckets == 0 then reset = 0 else reset = last * width + span - now end
            states[i] = {cur, cost, stale, cur * width + span - now}
        else
            remaining = limit - used
            if #buckets > 0 then reset = buckets[#buckets] * width + span - now end
            if cost <= limit then
                local freed = 0
                for _, b in ipairs(buckets) do
                    freed = freed + per[b]
                    if used - freed + cost <= limit then
                        retry = b * width + span - now
                        break
                    end
                end
            else
                retry = reset
            end
        end
    else
        redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
        local count = redis.call('ZCARD', key)
        local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
        if first[2] then reset = tonumber(first[2]) - now end
        if count + 1 <= limit then
            ok = 1
            remaining = limit - count - 1
            states[i] = {now + param, param}
        else
            remaining = limit - count
            retry = reset
        end
    end
    if remaining < 0 then remaining = 0 end
    if ok == 0 then all_ok = false end
    reply[#reply + 1] = ok
    reply[#reply + 1] = remaining
    reply[#reply + 1] = reset
    reply[#reply + 1] = retry
    reply[#reply + 1] = window
end

if all_ok then
    for i = 1, n do
        local kind = tonumber(ARGV[2 + (i - 1) * 4])
        local s = states[i]
        local key = KEYS[i]
        if kind == 1 or kind == 2 then
            redis.call('SET', key, string.format('%.17g %.17g', s[1], s[2]), 'PX', math.ceil(s[3] / 1000) + 1000)
        elseif kind == 4 or kind == 5 then
            if #s[3] > 0 then redis.call('HDEL', key, unpack(s[3])) end
            if s[2] > 0 then
                redis.call('HINCRBY', key, string.format('%d', s[1]), string.format('%d', s[2]))
                redis.call('PEXPIRE', key, math.ceil(s[4] / 1000) + 1000)
            end
        else
            redis.call('ZADD', key, string.format('%.17g', s[1]), lease)
            redis.call('PEXPIRE', key, math.ceil(s[2] / 1000) + 1000)
        end
    end
end
return reply
