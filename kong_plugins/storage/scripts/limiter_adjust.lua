-- adjust: settle reserved costs once the real cost is known (refund < 0, extra charge > 0), and
-- end concurrency leases, so that a request is settled in one round trip.
-- KEYS[i] is rule i's key; five ARGV per rule: kind, limit, param, delta, reserved window (for a
-- concurrency rule, kind 3, the fifth is the lease id to release). Returns the leases released.
-- Rate rules: the level moves by delta (never below an empty bucket; extra charges may exceed
-- the limit, so later requests wait until the debt drains). Calendar rules: the reservation's
-- window is adjusted while it is current; once it has passed, refunds lapse and extra charges
-- go to the current window. Global rules (kinds 4 and 5): an extra charge goes to the current
-- bucket; a refund comes off the reservation's bucket while it is still in the window (never
-- below zero). Concurrency rules: the lease is removed (expired leases are dropped on the way).

local GLOBAL_BUCKETS = 20

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local released = 0
for i = 1, #KEYS do
    local b = (i - 1) * 5 + 1
    local kind, limit, param, delta = tonumber(ARGV[b]), tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
    local key = KEYS[i]
    local reserved = nil
    if kind ~= 3 then reserved = tonumber(ARGV[b + 4]) end
    if kind == 3 then
        redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
        released = released + redis.call('ZREM', key, ARGV[b + 4])
    elseif kind == 1 and delta ~= 0 then
        local level, last = 0, now
        local value = redis.call('GET', key)
        if value then
            local l, t = string.match(value, '^(%S+) (%S+)$')
            level, last = tonumber(l), tonumber(t)
        end
        local rate = limit / param
        local elapsed = now - last
        if elapsed < 0 then elapsed = 0 end
        level = level - elapsed * rate
        if level < 0 then level = 0 end
        level = level + delta
        if level < 0 then level = 0 end
        redis.call('SET', key, string.format('%.17g %.17g', level, math.max(last, now)),
                   'PX', math.ceil(level / rate / 1000) + 1000)
    elseif kind == 2 and delta ~= 0 then
        local current = math.floor(now / param)
        local stored, used = nil, 0
        local value = redis.call('GET', key)
        if value then
            local w, u = string.match(value, '^(%S+) (%S+)$')
            stored, used = tonumber(w), tonumber(u)
        end
        local target = nil
        if reserved == current then
            target = current
        elseif delta > 0 then
            target = current
        end
        if target ~= nil then
            if stored ~= target then used = 0 end
            used = used + delta
            if used < 0 then used = 0 end
            redis.call('SET', key, string.format('%.17g %.17g', target, used),
                       'PX', math.ceil(((target + 1) * param - now) / 1000) + 1000)
        end
    elseif (kind == 4 or kind == 5) and delta ~= 0 then
        local width, span = param, param
        if kind == 4 then
            width = math.floor(param / GLOBAL_BUCKETS)
            span = (GLOBAL_BUCKETS + 1) * width
        end
        local cur = math.floor(now / width)
        local lo = cur
        if kind == 4 then lo = cur - GLOBAL_BUCKETS end
        if delta > 0 then
            redis.call('HINCRBY', key, string.format('%d', cur), string.format('%d', delta))
            redis.call('PEXPIRE', key, math.ceil((cur * width + span - now) / 1000) + 1000)
        elseif reserved >= lo then
            local field = string.format('%d', reserved)
            local held = tonumber(redis.call('HGET', key, field) or '0')
            local refund = math.min(-delta, held)
            if refund > 0 then redis.call('HINCRBY', key, field, string.format('%d', -refund)) end
        end
    end
end
return released
