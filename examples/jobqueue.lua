-- jobqueue: a replicated job queue with visibility timeouts (at-least-once).
--
-- Producers enqueue jobs; consumers CLAIM them for a visibility timeout
-- (a lease), do the work, then ACK to delete the job. A job whose lease
-- expires before it is acked becomes visible again and is delivered to the
-- next claimer: a consumer that crashes loses nothing, and every job is
-- processed AT LEAST ONCE (so make the work idempotent: it may run twice).
--
-- Each claim hands out a lease token (the log index of the claim command).
-- ack, nack and extend must present the job's current token: a consumer
-- whose lease expired and whose job went to someone else gets ok=false and
-- must not assume its result counted. A late ack with the current token is
-- still accepted as long as nobody claimed the job in between.
--
-- Expiry is decided at apply time against ctx.time (the leader's clock in the
-- log entry), identically on every node; time never runs backwards (the
-- script keeps the largest time applied so far). Leases also expire ON THEIR
-- OWN: each claim and extend asks to be woken at the lease's end
-- (ctx.wake_at), and tick(ctx), which the cluster runs once that time has
-- passed (a timer entry in the log, no client traffic needed), puts every
-- expired job back in the queue ("expired" event; or "dead" once it used up
-- max_attempts). Its last lease token still acks it until someone claims it.
--
-- Jobs of a queue are delivered in id order (ids count 1, 2, 3, ... per
-- queue) among those visible. A job may have max_attempts: when a claim finds
-- it visible again after max_attempts deliveries it becomes "dead" instead
-- (kept for inspection; delete it when done).
--
-- Commands (POST /v1/command); queue and consumer names are non-empty strings
-- of at most 200 bytes; durations are integer milliseconds in [0, 86400000]
-- (visibility_ms at least 1):
--   {"op":"enqueue","queue":q,"payload":any[,"delay_ms":d][,"max_attempts":m]}
--       -> {"id":i,"visible_at":ms}
--   {"op":"claim","queue":q,"consumer":c,"visibility_ms":v[,"max":k]}
--       -> {"jobs":[{"id","payload","attempts","lease","lease_until"},...]}
--       up to k (default 1, at most 100) visible jobs; [] when none.
--   {"op":"ack","queue":q,"id":i,"lease":l}  -> {"ok":true} | {"ok":false,"reason":why}
--   {"op":"nack","queue":q,"id":i,"lease":l[,"delay_ms":d]}
--       -> {"ok":true,"visible_at":ms} | {"ok":false,"reason":why}   give the job back
--   {"op":"extend","queue":q,"id":i,"lease":l,"visibility_ms":v}
--       -> {"ok":true,"lease_until":ms} | {"ok":false,"reason":why}  only while the lease is live
--   {"op":"delete","queue":q,"id":i}         -> {"ok":true,"deleted":bool}  any job, dead ones too
-- Queries (POST /v1/query; they also work as commands):
--   {"op":"stats","queue":q[,"now":ms]}
--       -> {"jobs":n,"leased":n,"dead":n[,"visible":n]}  "leased" counts leases
--       not yet acked or given back (some may have expired); with "now" (your
--       clock), "visible" counts the jobs a claim at that time could get.
--   {"op":"get","queue":q,"id":i}            -> {"job":{...}|null}
--   {"op":"list","queue":q[,"after":id][,"limit":n]} -> {"jobs":[...],"truncated":bool}
--   {"op":"queues"}                          -> {"queues":[{"name","jobs","next_id"}]}
--   A job is {"id","payload","state":"ready"|"leased"|"dead","attempts",
--   "max_attempts" (0 = unlimited),"visible_at","lease","consumer","enqueued"}.
-- Watch events (GET /v1/watch?prefix=job/<queue>/), key "job/<queue>/<id>":
--   {"key":..,"op":"enqueued"|"claimed"|"acked"|"nacked"|"expired"|"dead"|"deleted",
--    "attempts":n}
--
-- Commands validate before they mutate: a failed command changes nothing.
-- Snapshot: canonical JSON {"clock":ms,"format":..,"queues":{q:{"jobs":[...by id],"next":n}}}.

local M = {}

local FORMAT = "moonraft-jobqueue/1"
local MAX_NAME = 200
local MAX_MS = 86400000
local MAX_CLAIM = 100
local DEFAULT_LIMIT = 100

local null = json.null
local encode = json.encode

-- name -> {jobs = {[id] = job}, next = next id, head = smallest live id (or next)}
local queues = {}
local clock = 0

local function bad(msg) error(msg, 0) end

local function absent(v) return v == nil or v == null end

local function want_name(t, field)
  local v = t[field]
  if type(v) ~= "string" or v == "" or #v > MAX_NAME then
    bad(field .. " must be a non-empty string of at most " .. MAX_NAME .. " bytes")
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

-- The queue named by t.queue, or nil; raises on a bad name.
local function queue_of(t) return queues[want_name(t, "queue")] end

-- Keep q.head on the smallest id still present so claims skip acked jobs.
local function advance(q)
  while q.head < q.next and q.jobs[q.head] == nil do q.head = q.head + 1 end
end

local function event(ctx, qname, job, op)
  ctx.emit({ key = "job/" .. qname .. "/" .. job.id, op = op, attempts = job.attempts })
end

local function view(job)
  return { id = job.id, payload = job.payload, state = job.state, attempts = job.attempts,
           max_attempts = job.max_attempts, visible_at = job.visible_at, lease = job.lease,
           consumer = job.consumer, enqueued = job.enqueued }
end

-- ---- queries -----------------------------------------------------------------

local readers = {}

function readers.stats(t)
  local q = queue_of(t)
  local now = want_int(t, "now", 0, math.maxinteger, -1)
  local r = { jobs = 0, leased = 0, dead = 0 }
  if now >= 0 then r.visible = 0 end
  if q == nil then return r end
  for id = q.head, q.next - 1 do
    local j = q.jobs[id]
    if j then
      r.jobs = r.jobs + 1
      if j.state == "leased" then r.leased = r.leased + 1 end
      if j.state == "dead" then r.dead = r.dead + 1 end
      if now >= 0 and j.state ~= "dead" and j.visible_at <= now then r.visible = r.visible + 1 end
    end
  end
  return r
end

function readers.get(t)
  local q = queue_of(t)
  local id = want_int(t, "id", 1, math.maxinteger)
  local j = q and q.jobs[id]
  return { job = j and view(j) or null }
end

function readers.list(t)
  local q = queue_of(t)
  local after = want_int(t, "after", 0, math.maxinteger, 0)
  local limit = want_int(t, "limit", 0, 10000, DEFAULT_LIMIT)
  local out = json.array()
  local truncated = false
  if q then
    local id = after + 1
    if id < q.head then id = q.head end
    while id < q.next do
      local j = q.jobs[id]
      if j then
        if #out == limit then truncated = true break end
        out[#out + 1] = view(j)
      end
      id = id + 1
    end
  end
  return { jobs = out, truncated = truncated }
end

function readers.queues()
  local out = json.array()
  for i, name in ipairs(canonical.keys(queues)) do
    local q = queues[name]
    local n = 0
    for id = q.head, q.next - 1 do if q.jobs[id] then n = n + 1 end end
    out[i] = { name = name, jobs = n, next_id = q.next }
  end
  return { queues = out }
end

-- ---- commands: f(cmd, ctx, now) validates everything, then mutates ------------

local writers = {}

function writers.enqueue(cmd, ctx, now)
  local qname = want_name(cmd, "queue")
  local payload = cmd.payload
  if payload == nil then bad("payload is required (any JSON value, null included)") end
  local delay = want_int(cmd, "delay_ms", 0, MAX_MS, 0)
  local max_attempts = want_int(cmd, "max_attempts", 0, 1000000, 0)
  local q = queues[qname]
  if q == nil then
    q = { jobs = {}, next = 1, head = 1 }
    queues[qname] = q
  end
  local job = { id = q.next, payload = payload, state = "ready", attempts = 0,
                max_attempts = max_attempts, visible_at = now + delay, lease = 0,
                consumer = "", enqueued = now }
  q.jobs[job.id] = job
  q.next = q.next + 1
  event(ctx, qname, job, "enqueued")
  return { id = job.id, visible_at = job.visible_at }
end

function writers.claim(cmd, ctx, now)
  local qname = want_name(cmd, "queue")
  local consumer = want_name(cmd, "consumer")
  local vis = want_int(cmd, "visibility_ms", 1, MAX_MS)
  local max = want_int(cmd, "max", 1, MAX_CLAIM, 1)
  local q = queues[qname]
  local got = json.array()
  if q == nil then return { jobs = got } end
  for id = q.head, q.next - 1 do
    if #got == max then break end
    local j = q.jobs[id]
    if j and j.state ~= "dead" and j.visible_at <= now then
      if j.max_attempts > 0 and j.attempts >= j.max_attempts then
        j.state, j.lease, j.consumer = "dead", 0, ""
        event(ctx, qname, j, "dead")
      else
        j.state = "leased"
        j.attempts = j.attempts + 1
        j.lease = ctx.index
        j.consumer = consumer
        j.visible_at = now + vis
        ctx.wake_at(j.visible_at)
        event(ctx, qname, j, "claimed")
        got[#got + 1] = { id = j.id, payload = j.payload, attempts = j.attempts,
                          lease = j.lease, lease_until = j.visible_at }
      end
    end
  end
  return { jobs = got }
end

-- The job (id, lease) names, or nil and why not.
local function leased_job(cmd)
  local q = queue_of(cmd)
  local id = want_int(cmd, "id", 1, math.maxinteger)
  local lease = want_int(cmd, "lease", 1, math.maxinteger)
  local j = q and q.jobs[id]
  if j == nil then return nil, nil, "no such job (already acked or deleted?)" end
  -- A lease that expired (tick made the job "ready" again) still counts
  -- until the job is claimed again or given back (nack resets lease to 0).
  if j.state == "dead" or j.lease ~= lease then
    return nil, nil, "lease superseded: the job was given back or delivered again"
  end
  return q, j
end

function writers.ack(cmd, ctx)
  local q, j, why = leased_job(cmd)
  if j == nil then return { ok = false, reason = why } end
  q.jobs[j.id] = nil
  advance(q)
  event(ctx, cmd.queue, j, "acked")
  return { ok = true }
end

function writers.nack(cmd, ctx, now)
  local delay = want_int(cmd, "delay_ms", 0, MAX_MS, 0)
  local _, j, why = leased_job(cmd)
  if j == nil then return { ok = false, reason = why } end
  j.state, j.lease, j.consumer = "ready", 0, ""
  j.visible_at = now + delay
  event(ctx, cmd.queue, j, "nacked")
  return { ok = true, visible_at = j.visible_at }
end

function writers.extend(cmd, ctx, now)
  local vis = want_int(cmd, "visibility_ms", 1, MAX_MS)
  local _, j, why = leased_job(cmd)
  if j == nil then return { ok = false, reason = why } end
  if j.visible_at <= now then
    return { ok = false, reason = "lease expired at " .. j.visible_at .. ": claim the job again" }
  end
  j.visible_at = now + vis
  ctx.wake_at(j.visible_at)
  return { ok = true, lease_until = j.visible_at }
end

function writers.delete(cmd, ctx)
  local q = queue_of(cmd)
  local id = want_int(cmd, "id", 1, math.maxinteger)
  local j = q and q.jobs[id]
  if j == nil then return { ok = true, deleted = false } end
  q.jobs[id] = nil
  advance(q)
  event(ctx, cmd.queue, j, "deleted")
  return { ok = true, deleted = true }
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

-- Runs when a deadline asked for with ctx.wake_at has passed: every leased
-- job whose lease ended by ctx.time becomes visible again (or dead, once it
-- used up max_attempts), queues in name order, jobs in id order.
function M.tick(ctx)
  local now = ctx.time
  if now < clock then now = clock end
  for _, qname in ipairs(canonical.keys(queues)) do
    local q = queues[qname]
    for id = q.head, q.next - 1 do
      local j = q.jobs[id]
      if j and j.state == "leased" and j.visible_at <= now then
        if j.max_attempts > 0 and j.attempts >= j.max_attempts then
          j.state, j.lease, j.consumer = "dead", 0, ""
          event(ctx, qname, j, "dead")
        else
          j.state = "ready" -- lease and consumer stay: a late ack still counts
          event(ctx, qname, j, "expired")
        end
      end
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

-- Jobs are written as an array in id order (integer-keyed tables with holes
-- would otherwise become objects with string keys).
function M.snapshot()
  local out = {}
  for name, q in pairs(queues) do -- order does not matter: encode sorts keys
    local jobs = json.array()
    for id = q.head, q.next - 1 do
      if q.jobs[id] then jobs[#jobs + 1] = q.jobs[id] end
    end
    out[name] = { next = q.next, jobs = jobs }
  end
  return encode({ format = FORMAT, clock = clock, queues = out })
end

local function check_job(j)
  if type(j) ~= "table" or math.type(j.id) ~= "integer" or j.payload == nil
      or (j.state ~= "ready" and j.state ~= "leased" and j.state ~= "dead")
      or math.type(j.attempts) ~= "integer" or math.type(j.max_attempts) ~= "integer"
      or math.type(j.visible_at) ~= "integer" or math.type(j.lease) ~= "integer"
      or type(j.consumer) ~= "string" or math.type(j.enqueued) ~= "integer" then
    error("bad job in snapshot", 0)
  end
end

function M.restore(s)
  local t = json.decode(s)
  if type(t) ~= "table" or t.format ~= FORMAT or math.type(t.clock) ~= "integer"
      or type(t.queues) ~= "table" then
    error("not a " .. FORMAT .. " snapshot", 0)
  end
  local qs = {}
  for name, sq in pairs(t.queues) do
    if type(name) ~= "string" or type(sq) ~= "table" or math.type(sq.next) ~= "integer"
        or type(sq.jobs) ~= "table" then
      error("bad queue in snapshot", 0)
    end
    local q = { jobs = {}, next = sq.next, head = sq.next }
    for _, j in ipairs(sq.jobs) do
      check_job(j)
      if j.id >= q.next or q.jobs[j.id] then error("bad job id in snapshot", 0) end
      q.jobs[j.id] = j
      if j.id < q.head then q.head = j.id end
    end
    qs[name] = q
  end
  queues, clock = qs, t.clock
end

return M
