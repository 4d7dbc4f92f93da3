-- Shared by limiter.lua and limiter_adjust.lua: a script cannot include another, so
-- Script.from_package prepends this file to both (kong_plugins/storage/limiter.py).

-- A kind 1 state as arrays: the buckets >= lo, ascending (buckets[j], counts[j], j = 1..top),
-- leading empty ones dropped. nil for a value in another format.
local function rate_parse(value, lo)
    local newest, rest = string.match(value, '^(%d+):%d+:%d+:(.*)$')
    if not newest then return nil end
    local given, k = {}, 0
    for c in string.gmatch(rest, '%d+') do
        k = k + 1
        given[k] = tonumber(c)
    end
    newest = tonumber(newest)
    local buckets, counts, top = {}, {}, 0
    for j = k, 1, -1 do
        local bucket, c = newest - j + 1, given[j]
        if bucket >= lo and (top > 0 or c > 0) then
            top = top + 1
            buckets[top] = bucket
            counts[top] = c
        end
    end
    return buckets, counts, top
end

-- The string of a kind 1 state (arrays of consecutive buckets, ascending), empty buckets at
-- either end dropped; nil when nothing is left.
local function rate_text(buckets, counts, top)
    while top > 0 and counts[top] == 0 do top = top - 1 end
    local low = 1
    while low <= top and counts[low] == 0 do low = low + 1 end
    if low > top then return nil end
    local parts, total = {}, 0
    for j = top, low, -1 do
        parts[#parts + 1] = string.format('%d', counts[j])
        total = total + counts[j]
    end
    return string.format('%d:%d:%d:', buckets[top], buckets[low], total) .. table.concat(parts, ' ')
end

-- Adds amount to bucket at (>= buckets[1] when there are buckets) of a kind 1 state, creating the
-- empty buckets up to it; the new top.
local function rate_add(buckets, counts, top, at, amount)
    if top == 0 then
        buckets[1], counts[1] = at, amount
        return 1
    end
    local first = buckets[1]
    local j = at - first + 1
    for k = top + 1, j do
        buckets[k], counts[k] = first + k - 1, 0
    end
    counts[j] = counts[j] + amount
    return math.max(top, j)
end
