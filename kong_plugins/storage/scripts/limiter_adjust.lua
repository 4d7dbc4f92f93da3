-- adjust: settle reserved costs once the real cost is known (refund < 0, extra charge > 0), and
-- end concurrency leases, so that a request is settled in one round trip.
-- KEYS[i] is rule i's key; five ARGV per rule: kind, limit, param, delta, reserved window (for a
-- concurrency rule, kind 3, the fifth is the lease id to release). Returns the leases released.
-- Sliding windows (kinds 1 and 4): an extra charge goes to the current bucket (so later requests
-- wait until it leaves the window); a refund comes off the reservation's bucket while that bucket
-- is still in the window (never below zero; once it has left, the refund no longer matters).
-- Calendar rules (kinds 2 and 5): the reservation's window is adjusted while it is current; once
-- it has passed, refunds lapse and extra charges go to the current window. Concurrency rules: the
-- lease is removed (expired leases are dropped on the way).
-- rate_parse and rate_text come from rate_state.lua, prepended at load.
-- The states are those of limiter.lua (kind 1: "<newest>:<oldest>:<total>:<counts, newest first>").

local BUCKETS = 20

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
        local width = param / BUCKETS
        local span = (BUCKETS + 1) * width
        local cur = math.floor(now / width)
        local value = redis.call('GET', key)
        local buckets, counts, top = {}, {}, 0
        if value then buckets, counts, top = rate_parse(value, cur - BUCKETS) end
        local changed = false
        if not buckets then
            -- the GCRA state of an earlier version: left alone (it drains by itself)
        elseif delta > 0 then
            local at = cur
            if top > 0 and buckets[1] > at then at = buckets[1] end
            top = rate_add(buckets, counts, top, at, delta)
            changed = true
        elseif top > 0 and reserved >= buckets[1] and reserved <= buckets[top]
               and counts[reserved - buckets[1] + 1] > 0 then
            local j = reserved - buckets[1] + 1
            counts[j] = math.max(0, counts[j] + delta)
            changed = true
        end
        if changed then
            local text = rate_text(buckets, counts, top)
            if text == nil then
                redis.call('DEL', key)
            else
                local newest = tonumber(string.match(text, '^(%d+)'))
                redis.call('SET', key, text, 'PX', math.ceil((newest * width + span - now) / 1000) + 1000)
            end
        end
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
            redis.call('SET', key, string.format('%d %d', target, used),
                       'PX', math.ceil(((target + 1) * param - now) / 1000) + 1000)
        end
    elseif (kind == 4 or kind == 5) and delta ~= 0 then
        local width, span = param, param
        if kind == 4 then
            width = math.floor(param / BUCKETS)
            span = (BUCKETS + 1) * width
        end
        local cur = math.floor(now / width)
        local lo = cur
        if kind == 4 then lo = cur - BUCKETS end
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
