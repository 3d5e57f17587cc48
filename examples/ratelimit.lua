-- ratelimit: replicated counters and token-bucket rate limiters.
--
-- Counters are named 64-bit integers. A token bucket holds at most
-- `capacity` tokens and refills continuously at `rate` tokens every `per_ms`
-- milliseconds; taking n tokens succeeds only if n are there. Every node
-- computes the refill from ctx.time (the leader's clock stored in the log
-- entry), never from its own clock, so all replicas agree on every answer.
-- Time never runs backwards here: after a leader change to a node whose clock
-- is behind, the script keeps using the largest time applied so far.
--
-- Arithmetic is exact: a bucket's level is an integer in units of
-- 1/per_ms token, so one millisecond adds exactly `rate` units.
--
-- Commands (POST /v1/command); names are non-empty strings of at most 200 bytes:
--   {"op":"incr","name":c[,"by":n]}      -> {"value":v}   by: integer, default 1, may be negative
--   {"op":"reset","name":c}              -> {"value":0,"previous":v}
--   {"op":"bucket","name":b,"capacity":c,"rate":r[,"per_ms":p]}
--       -> {"ok":true,"tokens":t}
--       Creates the bucket full, or reconfigures it keeping its tokens (capped
--       at the new capacity). capacity in [1, 1e9], rate in [1, 1e9] tokens per
--       per_ms milliseconds, per_ms in [1, 86400000], default 1000.
--   {"op":"take","name":b[,"n":k]}       -> {"ok":true,"tokens":left}
--                                         | {"ok":false,"tokens":left,"retry_after_ms":w}
--       n defaults to 1; n > capacity is an error (it could never succeed).
--       A refused take takes nothing. tokens are whole tokens, rounded down.
--   {"op":"drop","name":b}               -> {"ok":true,"existed":bool}
--   {"op":"window","name":w,"limit":n,"window_ms":ms}
--       -> {"ok":true}   a fixed-window limiter: at most `limit` hits per window
--       of window_ms (limit in [1, 1e9], window_ms in [1, 86400000]). Creates
--       it, or reconfigures it (the current window keeps its count and end).
--   {"op":"hit","name":w[,"n":k]}        -> {"ok":true,"count":c,"remaining":r,"resets_at":ms}
--                                         | {"ok":false,"count":c,"remaining":r,"resets_at":ms}
--       A window opens at the first hit and lasts window_ms; a refused hit
--       counts nothing. The window is RESET BY THE TIMER: the first hit asks
--       to be woken at its end (ctx.wake_at) and tick(ctx), which the cluster
--       runs once that time has passed (a timer entry in the log, no client
--       traffic needed), zeroes it and emits a "reset" event.
--   {"op":"unwindow","name":w}           -> {"ok":true,"existed":bool}
-- Queries (POST /v1/query; they also work as commands):
--   {"op":"counter","name":c}            -> {"value":v}   0 for a counter never touched
--   {"op":"get","name":b[,"now":ms]}     -> {"capacity","rate","per_ms","tokens","at":ms}
--       tokens at time "at": the last time the bucket changed, or "now" (your
--       clock, ms since the epoch) if you pass it and it is later. A query has
--       no ctx.time: it does not go through the log.
--   {"op":"list"}                        -> {"counters":{name:v,...},"buckets":[names],
--                                            "windows":[names]}
--   {"op":"window_get","name":w}         -> {"limit","window_ms","count","resets_at":ms|null}
-- Watch events (GET /v1/watch?prefix=counter/ or bucket/):
--   {"key":"counter/<name>","op":"incr"|"reset","value":v}
--   {"key":"bucket/<name>","op":"bucket"|"drop","capacity":c,"rate":r,"per_ms":p}
--   {"key":"window/<name>","op":"reset","count":c}   c: hits of the window that ended
--   (takes and hits emit nothing: they are the hot path and would flood watchers)
--
-- Commands validate before they mutate: a failed command changes nothing.
-- Snapshot: canonical JSON {"buckets":{...},"clock":ms,"counters":{...},"format":...,
-- "windows":{...}} (a snapshot without "windows", from before they existed, restores).
-- The pending wake-ups are not in it: the node keeps them beside it.

local M = {}

local FORMAT = "moonraft-ratelimit/1"
local MAX_NAME = 200
local MAX_CAPACITY = 1000000000
local MAX_RATE = 1000000000
local MAX_PER_MS = 86400000

local null = json.null
local encode = json.encode

local counters = {} -- name -> integer
local buckets = {}  -- name -> {capacity, rate, per_ms, level (units), at (ms)}
local windows = {}  -- name -> {limit, window_ms, count, ends (ms, 0 = no window open)}
local clock = 0     -- largest ctx.time applied so far

local function bad(msg) error(msg, 0) end

local function absent(v) return v == nil or v == null end

local function want_name(t)
  local v = t.name
  if type(v) ~= "string" or v == "" or #v > MAX_NAME then
    bad("name must be a non-empty string of at most " .. MAX_NAME .. " bytes")
  end
  return v
end

local function want_int(t, field, lo, hi, default)
  local v = t[field]
  if absent(v) and default ~= nil then return default end
  if math.type(v) ~= "integer" or v < lo or v > hi then
    bad(field .. " must be an integer in [" .. lo .. ", " .. hi .. "]")
  end
  return v
end

-- Level of bucket b (in units) at time `now`, without changing b.
-- capacity * per_ms <= 8.64e16, and elapsed is clamped to the time needed to
-- fill the bucket before multiplying, so nothing overflows.
local function level_at(b, now)
  local full = b.capacity * b.per_ms
  local elapsed = now - b.at
  if elapsed <= 0 then return b.level end
  local missing = full - b.level
  if elapsed >= (missing + b.rate - 1) // b.rate then return full end
  return b.level + elapsed * b.rate
end

local function whole(b, units) return units // b.per_ms end

-- ---- queries -----------------------------------------------------------------

local readers = {}

function readers.counter(q)
  return { value = counters[want_name(q)] or 0 }
end

function readers.get(q)
  local name = want_name(q)
  local now = want_int(q, "now", 0, math.maxinteger, -1)
  local b = buckets[name]
  if b == nil then bad("no bucket named " .. name) end
  local at = b.at
  if now > at then at = now end
  return { capacity = b.capacity, rate = b.rate, per_ms = b.per_ms,
           tokens = whole(b, level_at(b, at)), at = at }
end

function readers.list()
  local names = json.array()
  for i, k in ipairs(canonical.keys(buckets)) do names[i] = k end
  local wnames = json.array()
  for i, k in ipairs(canonical.keys(windows)) do wnames[i] = k end
  return { counters = counters, buckets = names, windows = wnames }
end

function readers.window_get(q)
  local name = want_name(q)
  local w = windows[name]
  if w == nil then bad("no window named " .. name) end
  return { limit = w.limit, window_ms = w.window_ms, count = w.count,
           resets_at = w.ends > 0 and w.ends or null }
end

-- ---- commands: f(cmd, ctx, now) validates everything, then mutates ------------

local writers = {}

function writers.incr(cmd, ctx)
  local name = want_name(cmd)
  local by = want_int(cmd, "by", math.mininteger, math.maxinteger, 1)
  local cur = counters[name] or 0
  local v = cur + by -- integers wrap around on overflow: detect it
  if (by > 0 and v < cur) or (by < 0 and v > cur) then bad("counter " .. name .. " would overflow") end
  counters[name] = v
  ctx.emit({ key = "counter/" .. name, op = "incr", value = v })
  return { value = v }
end

function writers.reset(cmd, ctx)
  local name = want_name(cmd)
  local prev = counters[name] or 0
  counters[name] = nil -- a reset counter reads as 0 and takes no room
  ctx.emit({ key = "counter/" .. name, op = "reset", value = 0 })
  return { value = 0, previous = prev }
end

function writers.bucket(cmd, ctx, now)
  local name = want_name(cmd)
  local capacity = want_int(cmd, "capacity", 1, MAX_CAPACITY)
  local rate = want_int(cmd, "rate", 1, MAX_RATE)
  local per_ms = want_int(cmd, "per_ms", 1, MAX_PER_MS, 1000)
  local b = buckets[name]
  local tokens = capacity
  if b then
    tokens = whole(b, level_at(b, now))
    if tokens > capacity then tokens = capacity end
  end
  buckets[name] = { capacity = capacity, rate = rate, per_ms = per_ms,
                    level = tokens * per_ms, at = now }
  ctx.emit({ key = "bucket/" .. name, op = "bucket", capacity = capacity, rate = rate,
             per_ms = per_ms })
  return { ok = true, tokens = tokens }
end

function writers.take(cmd, ctx, now)
  local name = want_name(cmd)
  local b = buckets[name]
  if b == nil then bad("no bucket named " .. name .. ": create it with op=bucket") end
  local n = want_int(cmd, "n", 1, MAX_CAPACITY, 1)
  if n > b.capacity then
    bad("n = " .. n .. " exceeds the capacity of bucket " .. name .. " (" .. b.capacity .. ")")
  end
  local level = level_at(b, now)
  local need = n * b.per_ms
  if level < need then
    -- Nothing changes: the refill keeps accruing from b.at.
    return { ok = false, tokens = whole(b, level),
             retry_after_ms = (need - level + b.rate - 1) // b.rate }
  end
  b.level = level - need
  b.at = now
  return { ok = true, tokens = whole(b, b.level) }
end

function writers.drop(cmd, ctx)
  local name = want_name(cmd)
  local b = buckets[name]
  if b == nil then return { ok = true, existed = false } end
  buckets[name] = nil
  ctx.emit({ key = "bucket/" .. name, op = "drop", capacity = b.capacity, rate = b.rate,
             per_ms = b.per_ms })
  return { ok = true, existed = true }
end

function writers.window(cmd, ctx)
  local name = want_name(cmd)
  local limit = want_int(cmd, "limit", 1, MAX_CAPACITY)
  local window_ms = want_int(cmd, "window_ms", 1, MAX_PER_MS)
  local w = windows[name]
  if w == nil then
    windows[name] = { limit = limit, window_ms = window_ms, count = 0, ends = 0 }
  else
    w.limit, w.window_ms = limit, window_ms
  end
  return { ok = true }
end

function writers.hit(cmd, ctx, now)
  local name = want_name(cmd)
  local w = windows[name]
  if w == nil then bad("no window named " .. name .. ": create it with op=window") end
  local n = want_int(cmd, "n", 1, MAX_CAPACITY, 1)
  if w.ends > 0 and w.ends <= now then
    -- ended, and its tick is not applied yet: reset it here
    ctx.emit({ key = "window/" .. name, op = "reset", count = w.count })
    w.count, w.ends = 0, 0
  end
  if w.ends == 0 then
    w.ends = now + w.window_ms
    ctx.wake_at(w.ends)
  end
  local ok = w.count + n <= w.limit
  if ok then w.count = w.count + n end
  return { ok = ok, count = w.count, remaining = w.limit - w.count, resets_at = w.ends }
end

function writers.unwindow(cmd, ctx)
  local name = want_name(cmd)
  local existed = windows[name] ~= nil
  windows[name] = nil
  return { ok = true, existed = existed }
end

local function op_of(cmd)
  if type(cmd) ~= "table" then bad("command must be a JSON object") end
  local op = cmd.op
  if type(op) ~= "string" then bad("op must be a string") end
  return op
end

function M.apply(cmd, ctx)
  local op = op_of(cmd)
  local now = ctx.time
  if now < clock then now = clock end
  local f = writers[op]
  local r
  if f then
    r = f(cmd, ctx, now)
  elseif readers[op] then
    r = readers[op](cmd)
  else
    bad("unknown op: " .. op)
  end
  clock = now
  return r
end

-- Runs when a deadline asked for with ctx.wake_at has passed: every window
-- that ended by ctx.time is reset, in name order, and watchers are told.
function M.tick(ctx)
  local now = ctx.time
  if now < clock then now = clock end
  for _, name in ipairs(canonical.keys(windows)) do
    local w = windows[name]
    if w.ends > 0 and w.ends <= now then
      ctx.emit({ key = "window/" .. name, op = "reset", count = w.count })
      w.count, w.ends = 0, 0
    end
  end
  clock = now
end

function M.query(q)
  local op = op_of(q)
  local f = readers[op]
  if f then return f(q) end
  if writers[op] then bad("op " .. op .. " changes the state: send it as a command") end
  bad("unknown op: " .. op)
end

function M.snapshot()
  return encode({ format = FORMAT, clock = clock, counters = counters, buckets = buckets,
                  windows = windows })
end

function M.restore(s)
  local t = json.decode(s)
  if type(t) ~= "table" or t.format ~= FORMAT or math.type(t.clock) ~= "integer"
      or type(t.counters) ~= "table" or type(t.buckets) ~= "table" then
    error("not a " .. FORMAT .. " snapshot", 0)
  end
  for k, v in pairs(t.counters) do
    if type(k) ~= "string" or math.type(v) ~= "integer" then error("bad counter in snapshot", 0) end
  end
  for k, b in pairs(t.buckets) do
    if type(k) ~= "string" or type(b) ~= "table" then error("bad bucket in snapshot", 0) end
    for _, f in ipairs({ "capacity", "rate", "per_ms", "level", "at" }) do
      if math.type(b[f]) ~= "integer" then error("bad bucket " .. k .. " in snapshot", 0) end
    end
  end
  local ws = t.windows
  if ws == nil then ws = {} end
  if type(ws) ~= "table" then error("bad windows in snapshot", 0) end
  for k, w in pairs(ws) do
    if type(k) ~= "string" or type(w) ~= "table" then error("bad window in snapshot", 0) end
    for _, f in ipairs({ "limit", "window_ms", "count", "ends" }) do
      if math.type(w[f]) ~= "integer" then error("bad window " .. k .. " in snapshot", 0) end
    end
  end
  counters, buckets, windows, clock = t.counters, t.buckets, ws, t.clock
end

return M
