-- lua/console.lua: the admin functions of `moonraft console`.
--
-- Runs on the operator's machine inside the console's Lua state (never on a
-- node). The C host (src/console) calls this file once with its `mr` table:
--   mr.http(method, path [, body [, opts]]) -> status, body, headers
--                                            | nil, message, code
--       opts.admin: use the admin token; opts.timeout: seconds;
--       opts.headers: extra request headers. Tokens are added in C.
--   mr.connect(addr) -> "host:port"; mr.addr() -> "host:port"
--   mr.has_token() -> bool, bool; mr.interrupted() -> bool; mr.sleep(s)
--   mr.sha256(s) -> hex digest
-- It defines the globals operators type (status, members, join, leave,
-- transfer, snapshot, check, deploy, command, query, kv, watch, connect, pp, help, json,
-- null) and returns the table the host uses: display(...) and complete(text).

local mr = ...
local json = require("cjson")

-- Debian's cjson 2.1.0 writes numbers with at most 14 significant digits,
-- so ids and indexes above 10^14 do not survive a round trip.

local M = {}
local null = json.null

local WATCH_TIMEOUT = 300 -- seconds a long poll may stay open

---------------------------------------------------------------------------
-- errors

-- Errors from the server (and from the transport) are raised as tables with
-- code, message, leader and status fields, so scripts can pcall and look at
-- err.code; they print as "code: message (leader: id)".
local Error = {}
Error.__index = Error
Error.__tostring = function(e)
  local s = tostring(e.code) .. ": " .. tostring(e.message)
  if e.leader ~= nil and e.leader ~= null then
    s = s .. " (leader: " .. tostring(e.leader) .. ")"
  end
  return s
end

local function raise(code, message, leader, status)
  error(setmetatable({ code = code, message = message, leader = leader, status = status }, Error), 0)
end

--- True if `e` is an error raised by a console function.
function M.is_error(e) return getmetatable(e) == Error end

---------------------------------------------------------------------------
-- HTTP + JSON

-- cjson decodes every number as a float; ids and indexes read better as
-- integers.
local function integers(v, depth)
  if type(v) == "number" then
    return math.tointeger(v) or v
  elseif type(v) == "table" and depth < 64 then
    for k, x in pairs(v) do v[k] = integers(x, depth + 1) end
  end
  return v
end

-- Percent-encodes everything but unreserved characters; '/' stays when
-- keep_slash (keys like "config/a" are paths under /v1/kv/).
local function urlencode(s, keep_slash)
  s = tostring(s)
  return (s:gsub("[^%w%-%._~/]", function(c) return string.format("%%%02X", c:byte()) end)
           :gsub("/", keep_slash and "/" or "%%2F"))
end
M.urlencode = urlencode

local function request(method, path, body, opts)
  local payload
  if body ~= nil then payload = (opts and opts.raw) and body or json.encode(body) end
  local status, text, headers = mr.http(method, path, payload, opts)
  if status == nil then
    raise(headers or "unreachable", text) -- transport failure: (nil, message, code)
  end
  local ok, decoded = true, nil
  if text ~= "" then ok, decoded = pcall(json.decode, text) end
  if ok then decoded = integers(decoded, 0) end
  local err = ok and type(decoded) == "table" and decoded.error
  if status >= 400 or err then
    if type(err) == "table" then
      raise(err.code or ("http_" .. status), err.message or "", err.leader, status)
    end
    local msg = (text ~= "" and text:sub(1, 200)) or ("HTTP status " .. status)
    raise("http_" .. status, msg, nil, status)
  end
  if not ok then raise("bad_answer", "answer is not JSON: " .. text:sub(1, 200), nil, status) end
  return decoded, headers
end
M.request = request

---------------------------------------------------------------------------
-- pretty printer

local keywords = {}
for w in ([[and break do else elseif end false for function goto if in local
  nil not or repeat return then true until while]]):gmatch("%a+") do keywords[w] = true end

local function is_ident(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil and not keywords[k]
end

local escapes = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or string.format("\\%03d", c:byte())
  end) .. '"'
end

local function scalar(v)
  if v == null then return "null" end
  local t = type(v)
  if t == "string" then return quote(v) end
  if t == "number" then
    if math.type(v) == "float" and v == math.floor(v) and v > -2^53 and v < 2^53 then
      return string.format("%d", v) -- 3.0 from JSON reads as 3
    end
    return tostring(v)
  end
  return tostring(v)
end

local type_order = { number = 1, string = 2, boolean = 3 }
local function key_less(a, b)
  local ta, tb = type_order[type(a)] or 4, type_order[type(b)] or 4
  if ta ~= tb then return ta < tb end
  if ta <= 2 then return a < b end
  return tostring(a) < tostring(b)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, key_less)
  return keys
end

local function is_array(t, keys)
  for i, k in ipairs(keys) do
    if k ~= i then return false end
  end
  return true
end

local function fmt_key(k)
  if is_ident(k) then return k end
  if type(k) == "string" then return "[" .. quote(k) .. "]" end
  return "[" .. scalar(k) .. "]"
end

local INLINE_WIDTH = 72

local function render(v, indent, open, out)
  if type(v) ~= "table" or v == null then
    out[#out + 1] = scalar(v)
    return
  end
  if open[v] then
    out[#out + 1] = "<cycle " .. tostring(v) .. ">"
    return
  end
  local keys = sorted_keys(v)
  if #keys == 0 then
    out[#out + 1] = "{}"
    return
  end
  local array = is_array(v, keys)
  -- Small tables of plain values stay on one line.
  local flat, parts, width = true, {}, indent
  for _, k in ipairs(keys) do
    local x = v[k]
    if type(x) == "table" and x ~= null and next(x) ~= nil then flat = false break end
    local s = (type(x) == "table" and x ~= null) and "{}" or scalar(x)
    parts[#parts + 1] = array and s or (fmt_key(k) .. " = " .. s)
    width = width + #parts[#parts] + 2
    if width > INLINE_WIDTH then flat = false break end
  end
  if flat then
    out[#out + 1] = "{ " .. table.concat(parts, ", ") .. " }"
    return
  end
  open[v] = true
  local pad = string.rep("  ", indent + 1)
  out[#out + 1] = "{\n"
  for _, k in ipairs(keys) do
    out[#out + 1] = pad
    if not array then out[#out + 1] = fmt_key(k) .. " = " end
    render(v[k], indent + 1, open, out)
    out[#out + 1] = ",\n"
  end
  out[#out + 1] = string.rep("  ", indent) .. "}"
  open[v] = nil
end

--- Returns v as readable, indented Lua-like text (sorted keys, cycles marked).
function M.format(v)
  local out = {}
  render(v, 0, {}, out)
  return table.concat(out)
end

--- Prints each value on its own line.
function M.display(...)
  for i = 1, select("#", ...) do
    io.stdout:write(M.format((select(i, ...))), "\n")
  end
  io.stdout:flush()
end

---------------------------------------------------------------------------
-- admin functions (globals)

local function check_id(id, fname)
  if type(id) ~= "number" and type(id) ~= "string" then
    error(fname .. ": id must be a number or a string", 3)
  end
  return math.tointeger(tonumber(id)) or id
end

--- status() -> the node's status table (id, role, term, leader, commit, ...).
function status() return (request("GET", "/v1/status", nil, { admin = true })) end

--- members() -> list of members.
function members()
  local d = request("GET", "/v1/members", nil, { admin = true })
  if type(d) == "table" and d.members ~= nil then return d.members end
  return d
end

--- join(id, raft_addr, http_addr [, {learner = true}]) -> the server's answer.
function join(id, raft_addr, http_addr, opts)
  id = check_id(id, "join")
  if type(raft_addr) ~= "string" or type(http_addr) ~= "string" then
    error("join: raft_addr and http_addr must be strings (host:port)", 2)
  end
  local learner = type(opts) == "table" and opts.learner and true or false
  return (request("POST", "/v1/members",
    { id = id, raft_addr = raft_addr, http_addr = http_addr, learner = learner }, { admin = true }))
end

--- leave(id) -> the server's answer.
function leave(id)
  id = check_id(id, "leave")
  return (request("DELETE", "/v1/members/" .. urlencode(id), nil, { admin = true }))
end

--- transfer([id]) -> the server's answer; without id the leader picks.
function transfer(id)
  local body
  if id ~= nil then body = { id = check_id(id, "transfer") } end
  return (request("POST", "/v1/leader/transfer", body, { admin = true }))
end

--- snapshot() -> the server's answer.
function snapshot() return (request("POST", "/v1/snapshot", nil, { admin = true })) end

--- check() -> {check_index = n}: the leader appends an integrity check now;
--- the verdict shows in status().integrity once every member reported.
function check() return (request("POST", "/v1/integrity/check", nil, { admin = true })) end

--- deploy(file [, label]) -> {hash, label, size, index}
--- Deploys a new state machine script through the log (POST /v1/script) and
--- waits until this node runs it (GET /v1/script shows its hash). label
--- defaults to the file's name. A script that does not load, or cannot take
--- over the current state, raises script_error and changes nothing.
function deploy(file, label)
  if type(file) ~= "string" then raise("invalid_argument", "deploy: file must be a path") end
  local f, err = io.open(file, "rb")
  if not f then raise("invalid_argument", "deploy: " .. tostring(err)) end
  local src = f:read("a")
  f:close()
  if src == nil or src == "" then raise("invalid_argument", "deploy: " .. file .. " is empty") end
  label = label or file:match("([^/]+)$")
  local want = mr.sha256(src)
  local ok, res = pcall(request, "POST", "/v1/script?label=" .. urlencode(label), src,
                        { admin = true, raw = true, timeout = 120 })
  -- 504: the entry may or may not have been applied; the hash below tells.
  if not ok and not (M.is_error(res) and res.status == 504) then error(res, 0) end
  local deadline = os.time() + 60
  while true do
    local cur = request("GET", "/v1/script")
    if cur.hash == want then return cur end
    if os.time() > deadline then
      raise("timeout", "the script " .. want .. " is not in effect on " .. mr.addr() ..
            " (it runs " .. tostring(cur.hash) .. ")")
    end
    if mr.interrupted() then raise("interrupted", "deploy: interrupted") end
    mr.sleep(0.1)
  end
end

--- command(cmd [, {idempotency_key = "k"}]) -> result, index
function command(cmd, opts)
  if type(cmd) ~= "table" then error("command: expects a table, e.g. command{op = \"put\", key = \"a\", value = 1}", 2) end
  local ro
  if type(opts) == "table" and opts.idempotency_key then
    ro = { headers = { ["Idempotency-Key"] = tostring(opts.idempotency_key) } }
  end
  local d = request("POST", "/v1/command", cmd, ro)
  return d.result, d.index
end

local consistencies = { linearizable = true, lease = true, stale = true }

--- query(q [, consistency]) -> result, index. consistency: "linearizable"
--- (default), "lease" or "stale".
function query(q, consistency)
  consistency = consistency or "linearizable"
  if not consistencies[consistency] then
    error("query: consistency must be linearizable, lease or stale", 2)
  end
  if q == nil then q = {} end
  local d = request("POST", "/v1/query?consistency=" .. consistency, q)
  return d.result, d.index
end

kv = {}

local function check_key(key, fname)
  if type(key) ~= "string" and type(key) ~= "number" then
    error("kv." .. fname .. ": key must be a string", 3)
  end
  key = tostring(key)
  if key == "" then error("kv." .. fname .. ": key must not be empty", 3) end
  return key
end

--- kv.put(key, value) -> index
function kv.put(key, value)
  key = check_key(key, "put")
  if value == nil then error("kv.put: value required (use kv.del to remove)", 2) end
  local d = request("PUT", "/v1/kv/" .. urlencode(key, true), value)
  return d.index
end

--- kv.get(key) -> value, index (nil when the key does not exist)
function kv.get(key)
  key = check_key(key, "get")
  local ok, d = pcall(request, "GET", "/v1/kv/" .. urlencode(key, true))
  if not ok then
    if M.is_error(d) and d.status == 404 and d.code == "not_found" then return nil end
    error(d, 0)
  end
  local v = d.value
  if v == null then v = nil end
  return v, d.index
end

--- kv.del(key) -> index
function kv.del(key)
  key = check_key(key, "del")
  local d = request("DELETE", "/v1/kv/" .. urlencode(key, true))
  return d.index
end

--- kv.list([prefix]) -> what the kv machine lists for prefix, index
function kv.list(prefix)
  prefix = prefix and tostring(prefix) or ""
  local d = request("GET", "/v1/kv/?prefix=" .. urlencode(prefix))
  if type(d) ~= "table" then return d end
  if d.value ~= nil then return d.value, d.index end
  if d.result ~= nil then return d.result, d.index end
  return d
end

--- kv.cas(key, expect, value) -> ok, current (through /v1/command)
function kv.cas(key, expect, value)
  key = check_key(key, "cas")
  local r = command({ op = "cas", key = key, expect = expect == nil and null or expect,
                      value = value == nil and null or value })
  if type(r) == "table" then return r.ok, r.value end
  return r
end

--- watch(prefix, fn [, index]) -> last index
--- Long-polls /v1/watch and calls fn(event) for each event until fn returns
--- false or Ctrl-C. Without fn, events are printed.
function watch(prefix, fn, index)
  prefix = prefix and tostring(prefix) or ""
  fn = fn or function(ev) M.display(ev) end
  local cursor = index
  while true do
    local path = "/v1/watch?prefix=" .. urlencode(prefix)
    if cursor ~= nil then path = path .. "&index=" .. tostring(cursor) end
    local ok, d = pcall(request, "GET", path, nil, { timeout = WATCH_TIMEOUT })
    if not ok then
      if M.is_error(d) and d.code == "interrupted" then return cursor end
      if not (M.is_error(d) and d.code == "timeout") then error(d, 0) end
      d = {}
    end
    if type(d) ~= "table" then raise("bad_answer", "watch answer is not an object") end
    local events = d.events
    if d.index ~= nil and d.index ~= null then cursor = d.index end
    if type(events) == "table" then
      for _, ev in ipairs(events) do
        if fn(ev) == false then return cursor end
      end
    end
    if mr.interrupted() then return cursor end
  end
end

--- connect(addr) -> "host:port": talk to another node from now on.
function connect(addr)
  if type(addr) ~= "string" then error("connect: expects \"host:port\"", 2) end
  return mr.connect(addr)
end

--- pp(...): pretty-print values (what the REPL does with results).
function pp(...) M.display(...) end

_G.json = json
_G.null = null -- JSON null (cjson.null), e.g. kv.put("k", null)

local help_text = [[
moonraft console: Lua 5.4 over the node's HTTP API (%s).

  status()                          the node's status (role, term, leader, indexes, ...)
  members()                         cluster members
  join(id, raft_addr, http_addr [, {learner = true}])
                                    add a member (voter unless learner)
  leave(id)                         remove a member
  transfer([id])                    move leadership (to id, or let the leader choose)
  snapshot()                        take a snapshot now
  check()                           compare every member's state hash now (leader only;
                                    result in status().integrity)
  deploy("file.lua" [, label])      run a new state machine script (through the log);
                                    waits until this node runs it -> {hash, label, index}
  command{...}                      apply a command through the log -> result, index
  query({...} [, "stale"|"lease"])  run a read query -> result, index
  kv.put(k, v)  kv.get(k)  kv.del(k)  kv.list(prefix)  kv.cas(k, expect, v)
  watch(prefix, fn)                 call fn(event) for changes until fn returns false / Ctrl-C
  connect("host:port")              switch to another node
  pp(v)                             pretty-print a value;  json.encode / json.decode
  help()                            this text

Errors from the server raise Lua errors "code: message (leader: id)"; pcall
returns them as tables with .code, .message, .leader, .status.
Tab completes names (kv.<TAB>); history is kept in ~/.moonraft_history.]]

--- help(): list the commands.
function help()
  print(string.format(help_text, mr.addr()))
end

---------------------------------------------------------------------------
-- completion

local function fields(t, prefix, add)
  local seen_mt = 0
  while type(t) == "table" and seen_mt < 8 do
    for k, v in pairs(t) do
      if is_ident(k) and k:sub(1, #prefix) == prefix then add(k, v) end
    end
    local mt = getmetatable(t)
    t = type(mt) == "table" and rawget(mt, "__index") or nil
    seen_mt = seen_mt + 1
  end
end

--- complete(text) -> sorted candidates for a name path ("kv.p" -> {"kv.put("}).
--- Tables get a trailing ".", functions "(".
function M.complete(text)
  local path, last = text:match("^(.-)([%w_]*)$")
  local t = _G
  local method = false
  if path ~= "" then
    local sep = path:sub(-1)
    if sep ~= "." and sep ~= ":" then return {} end
    method = sep == ":"
    for name in (path:sub(1, -2) .. "."):gmatch("(.-)%.") do
      if not is_ident(name) then return {} end
      local ok, v = pcall(function() return t[name] end)
      if not ok then return {} end
      t = v
    end
    if method then
      local mt = getmetatable(t)
      t = (type(t) == "string") and string or (type(mt) == "table" and mt.__index)
    end
    if type(t) ~= "table" then return {} end
  end
  local out, seen = {}, {}
  fields(t, last, function(k, v)
    if seen[k] then return end
    local tv = type(v)
    if method and tv ~= "function" then return end
    seen[k] = true
    out[#out + 1] = path .. k .. (tv == "function" and "(" or (tv == "table" and "." or ""))
  end)
  if path == "" then
    for k in pairs(keywords) do
      if k:sub(1, #last) == last and not seen[k] then out[#out + 1] = k end
    end
  end
  table.sort(out)
  return out
end

return M
