-- kv: moonraft's default state machine, a replicated key-value store.
--
-- Commands (POST /v1/command) and queries (POST /v1/query) are JSON objects:
--   {"op":"put","key":k,"value":v}             -> {"ok":true}
--   {"op":"get","key":k}                       -> {"value":v}  (null when absent)
--   {"op":"delete","key":k}                    -> {"ok":true,"deleted":true|false}
--   {"op":"cas","key":k,"expect":e,"value":v}  -> {"ok":true|false,"value":current}
--        "expect" null or absent means "the key must not exist"; "value"
--        null or absent in a cas deletes the key when the swap succeeds.
--   {"op":"list","prefix":p,"limit":n,"after":k}
--                                              -> {"items":[{"key":k,"value":v},...],
--                                                  "truncated":true|false}
--        keys in bytewise order; prefix defaults to "", limit to 1000; with
--        "after", only keys sorting after it (to page: pass the last key).
--        A list seeks in an ordered index: O(log n + limit).
--   {"op":"count"}                             -> {"count":n}
--   {"op":"mput","items":{k1:v1,k2:v2,...}}    -> {"ok":true,"count":n}
--        many puts in one entry (bulk loads); every item is checked before
--        any is stored, so a malformed mput changes nothing.
-- Keys are non-empty strings; values are any JSON (objects, arrays, numbers
-- with exact 64-bit integers, strings, booleans, null).
--
-- get, list and count work both as queries and as commands; put, delete and
-- cas only as commands. Every change emits a watch event:
--   {"op":"put","key":k,"value":v} or {"op":"delete","key":k}.
--
-- Commands validate everything before they change anything, so a command
-- that fails leaves the store untouched.
--
-- Storage: one sortedmap (C memory, invisible to the Lua collector) from key
-- to the value's canonical JSON text. get and list hand the stored text back
-- through json.raw, so reads never decode and re-encode it.
--
-- Snapshot "moonraft-kv/2": the line "moonraft-kv/2\n" followed by the
-- map's dump (sortedmap: entries in key order, lengths + key + value text),
-- byte-identical on every replica holding the same data. restore() also
-- accepts the older "moonraft-kv/1" snapshots (canonical JSON
-- {"data":{...},"format":"moonraft-kv/1"}) and converts them.

local kv = {}

local store = sortedmap.new()  -- key -> canonical JSON text of the value
local null = json.null
local encode = json.encode
local decode = json.decode
local raw = json.raw

local FORMAT = "moonraft-kv/2"
local HEADER = FORMAT .. "\n"
local FORMAT_V1 = "moonraft-kv/1"
local DEFAULT_LIMIT = 1000

local function bad(msg)
  error(msg, 0) -- level 0: the client sees the message, not a file position
end

local function want_key(cmd)
  local k = cmd.key
  if type(k) ~= "string" or k == "" then bad("key must be a non-empty string") end
  return k
end

-- Does the stored text cur hold a value equal to the decoded value e? Deep
-- equality of JSON values, with numbers compared as in Lua at the top level
-- (1 == 1.0) and exactly inside objects and arrays (as kv/1 did). The
-- encoder is canonical (sorted keys, one spelling per string, integer or
-- float), so apart from top-level numbers equal values have equal texts.
local function equal(cur, e)
  if type(e) == "number" then
    local c = cur:byte(1)
    return (c == 45 or (c >= 48 and c <= 57)) and decode(cur) == e -- '-' or a digit
  end
  return encode(e) == cur
end

local function stored(k)
  local t = store:get(k)
  if t == nil then return null end
  return raw(t)
end

local function get(cmd)
  return { value = stored(want_key(cmd)) }
end

local function list(cmd)
  local prefix = cmd.prefix
  if prefix == nil or prefix == null then prefix = "" end
  if type(prefix) ~= "string" then bad("prefix must be a string") end
  local limit = cmd.limit
  if limit == nil or limit == null then limit = DEFAULT_LIMIT end
  if math.type(limit) ~= "integer" or limit < 0 then bad("limit must be an integer >= 0") end
  local after = cmd.after
  if after == null then after = nil end
  if after ~= nil and type(after) ~= "string" then bad("after must be a string") end
  local keys, texts = store:items(prefix, limit + 1, after)
  local items = json.array()
  local n = #keys
  local truncated = n > limit
  if truncated then n = limit end
  for i = 1, n do
    items[i] = { key = keys[i], value = raw(texts[i]) }
  end
  return { items = items, truncated = truncated }
end

local readers = {
  get = get,
  list = list,
  count = function() return { count = store:count() } end,
}

local writers = {}

function writers.put(cmd, ctx)
  local k = want_key(cmd)
  local v = cmd.value
  if v == nil then bad("value is required") end
  store:set(k, encode(v)) -- all or nothing, even out of memory
  ctx.emit({ op = "put", key = k, value = v })
  return { ok = true }
end

function writers.mput(cmd, ctx)
  local items = cmd.items
  if type(items) ~= "table" then bad("items must be an object of key: value") end
  local keys, texts = {}, {}
  for k, v in pairs(items) do
    if type(k) ~= "string" or k == "" then bad("items: keys must be non-empty strings") end
    if v == nil then bad("items: value is required") end
    keys[#keys + 1] = k
    texts[k] = encode(v)
  end
  table.sort(keys) -- emit events in the same order on every replica
  for i = 1, #keys do
    local k = keys[i]
    store:set(k, texts[k])
    ctx.emit({ op = "put", key = k, value = items[k] })
  end
  return { ok = true, count = #keys }
end

function writers.delete(cmd, ctx)
  local k = want_key(cmd)
  if not store:remove(k) then return { ok = true, deleted = false } end
  ctx.emit({ op = "delete", key = k })
  return { ok = true, deleted = true }
end

function writers.cas(cmd, ctx)
  local k = want_key(cmd)
  local cur = store:get(k)
  local expect = cmd.expect
  local matches
  if expect == nil or expect == null then
    matches = cur == nil
  else
    matches = cur ~= nil and equal(cur, expect)
  end
  if not matches then
    return { ok = false, value = cur == nil and null or raw(cur) }
  end
  local v = cmd.value
  if v == nil or v == null then
    if cur ~= nil then
      store:remove(k)
      ctx.emit({ op = "delete", key = k })
    end
    return { ok = true, value = null }
  end
  store:set(k, encode(v))
  ctx.emit({ op = "put", key = k, value = v })
  return { ok = true, value = v }
end

local function op_of(cmd)
  if type(cmd) ~= "table" then bad("command must be a JSON object") end
  local op = cmd.op
  if type(op) ~= "string" then bad("op must be a string") end
  return op
end

function kv.apply(cmd, ctx)
  local op = op_of(cmd)
  local f = writers[op]
  if f then return f(cmd, ctx) end
  f = readers[op]
  if f then return f(cmd) end
  bad("unknown op: " .. op)
end

function kv.query(q)
  local op = op_of(q)
  local f = readers[op]
  if f then return f(q) end
  if writers[op] then bad("op " .. op .. " changes the store: send it as a command") end
  bad("unknown op: " .. op)
end

function kv.snapshot()
  return store:dump(HEADER)
end

-- kv/1: canonical JSON of the whole store, converted entry by entry.
local function restore_v1(s)
  local t = decode(s)
  if type(t) ~= "table" or t.format ~= FORMAT_V1 or type(t.data) ~= "table" then
    error("not a " .. FORMAT .. " or " .. FORMAT_V1 .. " snapshot", 0)
  end
  for k in pairs(t.data) do
    if type(k) ~= "string" then error("snapshot key is not a string", 0) end
  end
  local m = sortedmap.new()
  local keys = canonical.keys(t.data)
  for i = 1, #keys do
    local k = keys[i]
    m:set(k, encode(t.data[k]))
  end
  return m
end

function kv.restore(s)
  if s:sub(1, #HEADER) == HEADER then
    store = sortedmap.load(s, #HEADER + 1)
  else
    store = restore_v1(s)
  end
end

return kv
