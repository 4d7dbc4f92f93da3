-- check_and_consume: decide every rule of one request, then consume all of them or none.
--
-- Time is the server's (TIME), in microseconds, so every gateway node agrees on it.
-- KEYS[i] (i <= n) is rule i's key; after them, one more key per global rule (kinds 4 and 5), in
-- rule order: the rule's remote-usage hash. ARGV[1] is the lease id for concurrency rules, then
-- four values per rule: kind, limit, param, cost (so n = (#ARGV - 1) / 4).
--   kind 1 "rate"        sliding window; param = period (us, a multiple of BUCKETS), cut into
--                        BUCKETS buckets of param / BUCKETS. The window counts the current bucket
--                        and the BUCKETS before it: a span of at least one period, so no rolling
--                        period ever holds more than the limit (a request leaves the count between
--                        one period and one period + one bucket after it was admitted). State: the
--                        string "<newest>:<oldest>:<total>:<count> <count> ...", the counts of the
--                        consecutive buckets newest..oldest (newest first, both non-empty, at most
--                        BUCKETS + 1) and their total. Newest first and the total kept: while no
--                        bucket leaves the window, a request reads the header and rewrites the
--                        first count only; the counts are parsed once per bucket that leaves.
--   kind 2 "calendar"    fixed UTC window; param = window length (us, epoch aligned). State: the
--                        string "<window number> <consumed in that window>".
--   kind 3 "concurrency" in-flight leases; param = lease TTL (us). State: zset lease -> expiry (us).
--   kind 4 "global"      the sliding window of kind 1 across regions. State: hash bucket number ->
--                        cost used here; the remote hash holds the other regions' usage per bucket
--                        (written by the region exchange), counted alongside.
--   kind 5 "global calendar" like kind 2 across regions: one bucket per calendar window.
-- Reply: five integers per rule: allowed (0/1), remaining, reset (us), retry after (us), window
-- (kinds 1, 4, 5: the bucket the cost went to; kind 2: the window number; for adjust).
-- Mirrored by the Python twin in kong_plugins/storage/limiter.py: keep them in step.
-- Strings rather than hashes for kinds 1-2: one MGET reads every rule and one SET PX writes each,
-- which keeps a 3-rule decision at 5 commands (Redis >= 5 replicates scripts by effects, so
-- writing after TIME needs no redis.replicate_commands()).

local BUCKETS = 20
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local lease = ARGV[1]
local n = (#ARGV - 1) / 4
local reply = {}
local states = {}
local all_ok = true
local values = redis.call('MGET', unpack(KEYS, 1, n))
local remote_index = n

-- The verdict of a sliding window (kinds 1 and 4): buckets[j] (ascending) holds counts[j] of
-- usage, j = 1..top, every bucket still in the window; used is their sum; an admitted cost goes to
-- bucket `at`. A bucket leaves the window `span` after it began. Returns ok, remaining, reset
-- (until the newest usage leaves: full capacity again) and retry (until enough old buckets have
-- left for this cost to fit; for a cost above the limit, which never fits: reset).
local function slide(buckets, counts, top, used, limit, cost, at, width, span)
    while top > 0 and counts[top] == 0 do top = top - 1 end
    local newest = buckets[top]
    if used + cost <= limit then
        if cost > 0 and (newest == nil or at > newest) then newest = at end
        if newest == nil then return 1, limit - used - cost, 0, 0 end
        return 1, limit - used - cost, newest * width + span - now, 0
    end
    local reset = 0
    if newest ~= nil then reset = newest * width + span - now end
    if cost <= limit then
        local freed = 0
        for j = 1, top do
            freed = freed + counts[j]
            if used - freed + cost <= limit then
                return 0, limit - used, reset, buckets[j] * width + span - now
            end
        end
    end
    return 0, limit - used, reset, reset
end

-- rate_parse and rate_text (kind 1 states as arrays and back) come from rate_state.lua,
-- prepended at load: limiter_adjust.lua uses them too.

for i = 1, n do
    local b = 2 + (i - 1) * 4
    local kind, limit, param, cost = tonumber(ARGV[b]), tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
    local key = KEYS[i]
    local ok, remaining, reset, retry, window = 0, 0, 0, 0, 0
    if kind == 1 then
        local width = param / BUCKETS
        local span = (BUCKETS + 1) * width
        local cur = math.floor(now / width)
        local lo = cur - BUCKETS
        local value = values[i]
        local newest, oldest, total, count, rest = nil, nil, nil, nil, nil
        if value then newest, oldest, total, count, rest = string.match(value, '^(%d+):(%d+):(%d+):(%d+)(.*)$') end
        if newest then
            newest, oldest, total, count = tonumber(newest), tonumber(oldest), tonumber(total), tonumber(count)
        end
        -- A clock that went back (failover) never writes below the oldest bucket still counted:
        -- that bucket leaves the window later than the current one would, the safe side.
        local at = cur
        if newest and oldest >= lo and oldest > at then at = oldest end
        if newest and oldest >= lo and total + cost <= limit and at >= newest then
            -- every stored bucket still counts and the request fits: no parsing
            ok = 1
            remaining = limit - total - cost
            if cost > 0 then
                local text
                if at == newest then
                    text = string.format('%d:%d:%d:%d', newest, oldest, total + cost, count + cost) .. rest
                else
                    text = string.format('%d:%d:%d:%d', at, oldest, total + cost, cost) ..
                           string.rep(' 0', at - newest - 1) .. string.format(' %d', count) .. rest
                end
                reset = at * width + span - now
                states[i] = {text, reset}
            else
                reset = newest * width + span - now
            end
            window = at
        else
            local buckets, counts, top, used = nil, nil, 0, 0
            if value then buckets, counts, top = rate_parse(value, lo) end
            at = cur
            if buckets then
                for j = 1, top do used = used + counts[j] end
                if top > 0 and buckets[1] > cur then at = buckets[1] end
            else
                buckets, counts, top = {}, {}, 0
                if value then
                    -- "<level> <t>", left by the GCRA version of this script: its drained level
                    -- counts as usage of the current bucket, so upgrading opens no burst.
                    local l, t = string.match(value, '^(%S+) (%S+)$')
                    local level = (tonumber(l) or 0) - math.max(0, now - (tonumber(t) or now)) * limit / param
                    if level > 0 then
                        top, used = 1, math.ceil(level - 1e-6)
                        buckets[1], counts[1] = cur, used
                    end
                end
            end
            window = at
            ok, remaining, reset, retry = slide(buckets, counts, top, used, limit, cost, at, width, span)
            if ok == 1 and cost > 0 then
                top = rate_add(buckets, counts, top, at, cost)
                states[i] = {rate_text(buckets, counts, top), reset}
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
        local width, lo, span = param, 0, param
        if kind == 4 then
            width = math.floor(param / BUCKETS)
            span = (BUCKETS + 1) * width
        end
        local cur = math.floor(now / width)
        if kind == 4 then lo = cur - BUCKETS else lo = cur end
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
        local buckets, counts = {}, {}
        for b in pairs(per) do buckets[#buckets + 1] = b end
        table.sort(buckets)
        for j = 1, #buckets do counts[j] = per[buckets[j]] end
        ok, remaining, reset, retry = slide(buckets, counts, #buckets, used, limit, cost, cur, width, span)
        if ok == 1 then states[i] = {cur, cost, stale, cur * width + span - now} end
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
        if kind == 1 then
            -- s = {state string, until the newest usage leaves (us)}; no cost, no write
            if s then redis.call('SET', key, s[1], 'PX', math.ceil(s[2] / 1000) + 1000) end
        elseif kind == 2 then
            redis.call('SET', key, string.format('%d %d', s[1], s[2]), 'PX', math.ceil(s[3] / 1000) + 1000)
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
