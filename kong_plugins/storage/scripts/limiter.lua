-- check_and_consume: decide every rule of one request, then consume all of them or none.
--
-- Time is the server's (TIME), in microseconds, so every gateway node agrees on it.
-- KEYS[i] is rule i's key. ARGV[1] is the lease id for concurrency rules, then four values per
-- rule: kind, limit, param, cost.
--   kind 1 "rate"        GCRA as a leaky-bucket meter; param = period (us). State: the string
--                        "<level> <t>" (level in cost units, t = us of the last update). The
--                        bucket drains at limit/period; a request fits when level + cost <= limit.
--   kind 2 "calendar"    fixed UTC window; param = window length (us, epoch aligned). State: the
--                        string "<window number> <consumed in that window>".
--   kind 3 "concurrency" in-flight leases; param = lease TTL (us). State: zset lease -> expiry (us).
-- Reply: five integers per rule: allowed (0/1), remaining, reset (us), retry after (us), window.
-- Mirrored by the Python twin in kong_plugins/storage/limiter.py: keep them in step.
-- Strings rather than hashes: one MGET reads every rule and one SET PX writes each, which keeps
-- a 3-rule decision at 5 commands (Redis >= 5 replicates scripts by effects, so writing after
-- TIME needs no redis.replicate_commands()).

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local EPS = 1e-6
local lease = ARGV[1]
local n = #KEYS
local reply = {}
local states = {}
local all_ok = true
local values = redis.call('MGET', unpack(KEYS))

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
        else
            redis.call('ZADD', key, string.format('%.17g', s[1]), lease)
            redis.call('PEXPIRE', key, math.ceil(s[2] / 1000) + 1000)
        end
    end
end
return reply
