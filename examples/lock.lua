-- lock: a replicated lock service with TTL leases and fencing tokens.
--
-- A lock is held by one owner at a time, for a lease of ttl_ms milliseconds.
-- Every time a lock changes hands its holder gets a new FENCING TOKEN: the log
-- index of the command that acquired it, so tokens of one lock only ever grow.
-- A holder passes its token along with every write it makes to the protected
-- resource; the resource remembers the largest token it has seen and refuses
-- smaller ones, so a holder that was paused past its lease (GC, swap, a
-- network partition) cannot clobber the work of the next holder.
--
-- Time comes only from ctx.time, the leader's clock stored in each log entry,
-- so whether a lease has expired is decided identically on every node. This
-- script never lets time run backwards: a new leader whose clock is behind the
-- old one's sees the largest time applied so far ("clock" below).
--
-- Leases expire ON THEIR OWN: every acquire and renew asks to be woken at the
-- new expiry (ctx.wake_at), and tick(ctx), which the cluster runs once that
-- time has passed (a timer entry in the log, no client traffic needed),
-- deletes every expired lock and emits an "expired" event, so a watcher
-- waiting for a lock to become free hears it within ~10 ms of the expiry.
--
-- Commands (POST /v1/command); names and owners are non-empty strings of at
-- most 200 bytes, ttl_ms an integer in [1, 604800000] (7 days):
--   {"op":"acquire","name":n,"owner":o,"ttl_ms":t}
--       -> {"ok":true,"token":k,"expires":ms}       the lock is yours until expires
--       -> {"ok":false,"owner":o2,"expires":ms}     held by o2 until expires
--       Acquiring a lock you already hold renews it and keeps its token.
--   {"op":"renew","name":n,"owner":o,"token":k,"ttl_ms":t}
--       -> {"ok":true,"token":k,"expires":ms} or {"ok":false,"reason":why}
--       only while the lease is live: an expired lease must be acquired again.
--   {"op":"release","name":n,"owner":o,"token":k}
--       -> {"ok":true} or {"ok":false,"reason":why}
--       a stale token (the lock changed hands since) releases nothing.
--   {"op":"check","name":n,"token":k}
--       -> {"ok":true|false}: is k the token of a live lease at this point of
--       the log? A fence for resources that cannot keep tokens themselves.
-- Queries (POST /v1/query; they also work as commands):
--   {"op":"get","name":n[,"now":ms]}
--       -> {"name":n,"owner":o|null,"token":k|null,"expires":ms|null[,"live":bool]}
--       A query does not go through the log, so it has no ctx.time: it reports
--       the stored expiry; pass "now" (your clock, ms since the epoch) to also
--       get "live" = the lease is unexpired at that time.
--   {"op":"list"[,"prefix":p][,"limit":n]}
--       -> {"locks":[{"name","owner","token","expires"},...],"truncated":bool}
--       names in bytewise order, limit defaults to 1000. An expired lease is
--       listed only until the timer tick removes it (right after it expires).
-- Watch events (GET /v1/watch?prefix=lock/), key "lock/<name>":
--   {"key":..,"op":"acquired"|"released"|"expired","owner":o,"token":k}
--   "expired" comes from tick(ctx), at the first timer tick after the expiry.
--
-- Every command validates its input before it changes anything, so a
-- command that fails (422 script_error) leaves the state untouched.
-- Snapshot: canonical JSON {"clock":ms,"format":"moonraft-lock/1","locks":{...}}.

local M = {}

local FORMAT = "moonraft-lock/1"
local MAX_TTL = 7 * 24 * 3600 * 1000
local MAX_NAME = 200
local DEFAULT_LIMIT = 1000

local null = json.null
local encode = json.encode

local locks = {} -- name -> {owner = o, token = k, expires = ms}
local clock = 0  -- largest ctx.time applied so far

local function bad(msg)
  error(msg, 0) -- level 0: the client sees the message without a file position
end

local function want_string(t, field)
  local v = t[field]
  if type(v) ~= "string" or v == "" or #v > MAX_NAME then
    bad(field .. " must be a non-empty string of at most " .. MAX_NAME .. " bytes")
  end
  return v
end

local function want_int(t, field, lo, hi)
  local v = t[field]
  if math.type(v) ~= "integer" or v < lo or v > hi then
    bad(field .. " must be an integer in [" .. lo .. ", " .. hi .. "]")
  end
  return v
end

local function absent(v) return v == nil or v == null end

-- The lease of `l` is live at time `now`.
local function live(l, now) return l ~= nil and now < l.expires end

local function event(ctx, op, name, l)
  ctx.emit({ key = "lock/" .. name, op = op, owner = l.owner, token = l.token })
end

-- ---- queries -----------------------------------------------------------------

local readers = {}

function readers.get(q)
  local name = want_string(q, "name")
  local now = q.now
  if not absent(now) then now = want_int(q, "now", 0, math.maxinteger) else now = nil end
  local l = locks[name]
  local r = { name = name, owner = null, token = null, expires = null }
  if l then r.owner, r.token, r.expires = l.owner, l.token, l.expires end
  if now then r.live = live(l, now) end
  return r
end

function readers.list(q)
  local prefix = q.prefix
  if absent(prefix) then prefix = "" end
  if type(prefix) ~= "string" then bad("prefix must be a string") end
  local limit = q.limit
  if absent(limit) then limit = DEFAULT_LIMIT end
  if math.type(limit) ~= "integer" or limit < 0 then bad("limit must be an integer >= 0") end
  local names = canonical.keys(locks, prefix, limit + 1)
  local out = json.array()
  local n = #names
  local truncated = n > limit
  if truncated then n = limit end
  for i = 1, n do
    local l = locks[names[i]]
    out[i] = { name = names[i], owner = l.owner, token = l.token, expires = l.expires }
  end
  return { locks = out, truncated = truncated }
end

-- ---- commands: f(cmd, ctx, now) validates everything, then mutates ------------

local writers = {}

function writers.acquire(cmd, ctx, now)
  local name = want_string(cmd, "name")
  local owner = want_string(cmd, "owner")
  local ttl = want_int(cmd, "ttl_ms", 1, MAX_TTL)
  local l = locks[name]
  if live(l, now) then
    if l.owner ~= owner then return { ok = false, owner = l.owner, expires = l.expires } end
    l.expires = now + ttl -- re-acquire by the holder: a renewal, same token
    ctx.wake_at(l.expires)
    return { ok = true, token = l.token, expires = l.expires }
  end
  if l then event(ctx, "expired", name, l) end
  l = { owner = owner, token = ctx.index, expires = now + ttl }
  locks[name] = l
  ctx.wake_at(l.expires)
  event(ctx, "acquired", name, l)
  return { ok = true, token = l.token, expires = l.expires }
end

function writers.renew(cmd, ctx, now)
  local name = want_string(cmd, "name")
  local owner = want_string(cmd, "owner")
  local token = want_int(cmd, "token", 0, math.maxinteger)
  local ttl = want_int(cmd, "ttl_ms", 1, MAX_TTL)
  local l = locks[name]
  if l == nil or l.token ~= token or l.owner ~= owner then
    return { ok = false, reason = "not the holder: the lock changed hands or was released" }
  end
  if not live(l, now) then
    return { ok = false, reason = "lease expired at " .. l.expires .. ": acquire it again" }
  end
  l.expires = now + ttl
  ctx.wake_at(l.expires) -- the earlier wake-up finds the lease live and does nothing
  return { ok = true, token = l.token, expires = l.expires }
end

function writers.release(cmd, ctx)
  local name = want_string(cmd, "name")
  local owner = want_string(cmd, "owner")
  local token = want_int(cmd, "token", 0, math.maxinteger)
  local l = locks[name]
  if l == nil or l.token ~= token or l.owner ~= owner then
    return { ok = false, reason = "not the holder: the lock changed hands or was released" }
  end
  -- An expired lease nobody took over may still be released by its holder.
  locks[name] = nil
  event(ctx, "released", name, l)
  return { ok = true }
end

function writers.check(cmd, ctx, now)
  local name = want_string(cmd, "name")
  local token = want_int(cmd, "token", 0, math.maxinteger)
  local l = locks[name]
  return { ok = live(l, now) and l.token == token }
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
  if now < clock then now = clock end -- a leader with a slower clock: time never runs back
  local f = writers[op]
  local r
  if f then
    r = f(cmd, ctx, now)
  elseif readers[op] then
    r = readers[op](cmd)
  else
    bad("unknown op: " .. op)
  end
  clock = now -- only once the command succeeded
  return r
end

-- Runs when a deadline asked for with ctx.wake_at has passed: every lease
-- expired at ctx.time goes, in name order, and watchers are told.
function M.tick(ctx)
  local now = ctx.time
  if now < clock then now = clock end
  for _, name in ipairs(canonical.keys(locks)) do
    local l = locks[name]
    if not live(l, now) then
      locks[name] = nil
      event(ctx, "expired", name, l)
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
  return encode({ format = FORMAT, clock = clock, locks = locks })
end

function M.restore(s)
  local t = json.decode(s)
  if type(t) ~= "table" or t.format ~= FORMAT or math.type(t.clock) ~= "integer"
      or type(t.locks) ~= "table" then
    error("not a " .. FORMAT .. " snapshot", 0)
  end
  for name, l in pairs(t.locks) do
    if type(name) ~= "string" or type(l) ~= "table" or type(l.owner) ~= "string"
        or math.type(l.token) ~= "integer" or math.type(l.expires) ~= "integer" then
      error("bad lock in snapshot", 0)
    end
  end
  locks = t.locks
  clock = t.clock
end

return M
