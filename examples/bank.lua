-- bank: accounts and transfers whose total never changes.
--
-- Money enters only through deposit and leaves only through withdraw, and
-- both are counted, so at every log index
--     sum of all balances == deposited - withdrawn
-- Transfers move money between two accounts in one log entry: they are
-- atomic on every replica, survive leader crashes, and can never overdraw.
-- The "total" query recomputes the sum and reports whether the invariant
-- holds ("consistent"); the integration test checks it after killing the
-- leader in the middle of a stream of transfers.
--
-- Amounts are integers (cents, say) in [1, 1e15]; balances stay in
-- [0, 2^53 - 1] so that JavaScript clients read them exactly. Account names
-- are non-empty strings of at most 200 bytes.
--
-- Retrying a transfer whose answer was lost (504 timeout, connection reset)
-- could apply it twice: send every command with an Idempotency-Key header and
-- retry with the same key; the node then applies it at most once.
--
-- Commands (POST /v1/command):
--   {"op":"open","account":a}                      -> {"ok":true,"balance":0}
--       error if the account exists.
--   {"op":"deposit","account":a,"amount":n}        -> {"balance":b}
--   {"op":"withdraw","account":a,"amount":n}       -> {"balance":b}   refuses overdraft
--   {"op":"transfer","from":a,"to":b,"amount":n[,"memo":s]}
--       -> {"from_balance":x,"to_balance":y}
--       errors (422, nothing changes): unknown account, from == to, a bad
--       amount, "insufficient funds" (overdraft).
-- Queries (POST /v1/query; they also work as commands):
--   {"op":"balance","account":a}                   -> {"account":a,"balance":b}
--   {"op":"total"}
--       -> {"total":sum,"deposited":d,"withdrawn":w,"accounts":n,"consistent":bool}
--   {"op":"accounts"[,"prefix":p][,"limit":n]}
--       -> {"accounts":[{"account","balance"},...],"truncated":bool}
-- Watch events (GET /v1/watch?prefix=account/), key "account/<name>":
--   {"key":..,"op":"open"|"deposit"|"withdraw"|"debit"|"credit","amount":n,
--    "balance":b[,"peer":other account][,"memo":s]}
--
-- Commands validate before they mutate: a failed command changes nothing.
-- Snapshot: canonical JSON
--   {"accounts":{a:balance,...},"deposited":d,"format":"moonraft-bank/1","withdrawn":w}.

local M = {}

local FORMAT = "moonraft-bank/1"
local MAX_NAME = 200
local MAX_AMOUNT = 1000000000000000 -- 1e15
local MAX_BALANCE = 9007199254740991 -- 2^53 - 1
local DEFAULT_LIMIT = 1000

local null = json.null
local encode = json.encode

local balances = {} -- account -> integer balance
local deposited = 0 -- money minted by deposits, ever
local withdrawn = 0 -- money removed by withdrawals, ever

local function bad(msg) error(msg, 0) end

local function absent(v) return v == nil or v == null end

local function want_name(t, field)
  local v = t[field]
  if type(v) ~= "string" or v == "" or #v > MAX_NAME then
    bad(field .. " must be a non-empty string of at most " .. MAX_NAME .. " bytes")
  end
  return v
end

-- An existing account named by t[field].
local function want_account(t, field)
  local a = want_name(t, field)
  if balances[a] == nil then bad("no account named " .. a) end
  return a
end

local function want_amount(t)
  local v = t.amount
  if math.type(v) ~= "integer" or v < 1 or v > MAX_AMOUNT then
    bad("amount must be an integer in [1, " .. MAX_AMOUNT .. "]")
  end
  return v
end

local function want_credit(a, amount)
  if balances[a] > MAX_BALANCE - amount then
    bad("balance of " .. a .. " would exceed " .. MAX_BALANCE)
  end
end

local function want_debit(a, amount)
  if balances[a] < amount then
    bad("insufficient funds: " .. a .. " has " .. balances[a] .. ", needs " .. amount)
  end
end

local function event(ctx, a, op, amount, extra)
  local e = { key = "account/" .. a, op = op, amount = amount, balance = balances[a] }
  if extra then for k, v in pairs(extra) do e[k] = v end end -- encode sorts keys
  ctx.emit(e)
end

-- ---- queries -----------------------------------------------------------------

local readers = {}

function readers.balance(q)
  local a = want_account(q, "account")
  return { account = a, balance = balances[a] }
end

function readers.total()
  -- pairs visits keys in sorted order on every replica (the sandbox sees to it);
  -- integer addition would not care anyway.
  local sum, n = 0, 0
  for _, b in pairs(balances) do
    sum = sum + b
    n = n + 1
  end
  return { total = sum, deposited = deposited, withdrawn = withdrawn, accounts = n,
           consistent = sum == deposited - withdrawn }
end

function readers.accounts(q)
  local prefix = q.prefix
  if absent(prefix) then prefix = "" end
  if type(prefix) ~= "string" then bad("prefix must be a string") end
  local limit = q.limit
  if absent(limit) then limit = DEFAULT_LIMIT end
  if math.type(limit) ~= "integer" or limit < 0 then bad("limit must be an integer >= 0") end
  local names = canonical.keys(balances, prefix, limit + 1)
  local out = json.array()
  local n = #names
  local truncated = n > limit
  if truncated then n = limit end
  for i = 1, n do out[i] = { account = names[i], balance = balances[names[i]] } end
  return { accounts = out, truncated = truncated }
end

-- ---- commands: validate everything, then mutate --------------------------------

local writers = {}

function writers.open(cmd, ctx)
  local a = want_name(cmd, "account")
  if balances[a] ~= nil then bad("account " .. a .. " already exists") end
  balances[a] = 0
  event(ctx, a, "open", 0)
  return { ok = true, balance = 0 }
end

function writers.deposit(cmd, ctx)
  local a = want_account(cmd, "account")
  local amount = want_amount(cmd)
  want_credit(a, amount)
  if deposited > math.maxinteger - amount then bad("deposit counter would overflow") end
  balances[a] = balances[a] + amount
  deposited = deposited + amount
  event(ctx, a, "deposit", amount)
  return { balance = balances[a] }
end

function writers.withdraw(cmd, ctx)
  local a = want_account(cmd, "account")
  local amount = want_amount(cmd)
  want_debit(a, amount)
  if withdrawn > math.maxinteger - amount then bad("withdrawal counter would overflow") end
  balances[a] = balances[a] - amount
  withdrawn = withdrawn + amount
  event(ctx, a, "withdraw", amount)
  return { balance = balances[a] }
end

function writers.transfer(cmd, ctx)
  local from = want_account(cmd, "from")
  local to = want_account(cmd, "to")
  if from == to then bad("from and to are the same account") end
  local amount = want_amount(cmd)
  local memo = cmd.memo
  if absent(memo) then
    memo = nil
  elseif type(memo) ~= "string" or #memo > 1000 then
    bad("memo must be a string of at most 1000 bytes")
  end
  want_debit(from, amount)
  want_credit(to, amount)
  -- Nothing below can fail: both balances change, or (above) neither.
  balances[from] = balances[from] - amount
  balances[to] = balances[to] + amount
  event(ctx, from, "debit", amount, { peer = to, memo = memo })
  event(ctx, to, "credit", amount, { peer = from, memo = memo })
  return { from_balance = balances[from], to_balance = balances[to] }
end

local function op_of(cmd)
  if type(cmd) ~= "table" then bad("command must be a JSON object") end
  local op = cmd.op
  if type(op) ~= "string" then bad("op must be a string") end
  return op
end

function M.apply(cmd, ctx)
  local op = op_of(cmd)
  local f = writers[op]
  if f then return f(cmd, ctx) end
  f = readers[op]
  if f then return f(cmd) end
  bad("unknown op: " .. op)
end

function M.query(q)
  local op = op_of(q)
  local f = readers[op]
  if f then return f(q) end
  if writers[op] then bad("op " .. op .. " changes the state: send it as a command") end
  bad("unknown op: " .. op)
end

function M.snapshot()
  return encode({ format = FORMAT, accounts = balances, deposited = deposited,
                  withdrawn = withdrawn })
end

function M.restore(s)
  local t = json.decode(s)
  if type(t) ~= "table" or t.format ~= FORMAT or type(t.accounts) ~= "table"
      or math.type(t.deposited) ~= "integer" or math.type(t.withdrawn) ~= "integer" then
    error("not a " .. FORMAT .. " snapshot", 0)
  end
  local sum = 0
  for a, b in pairs(t.accounts) do
    if type(a) ~= "string" or math.type(b) ~= "integer" or b < 0 then
      error("bad account in snapshot", 0)
    end
    sum = sum + b
  end
  if sum ~= t.deposited - t.withdrawn then
    error("snapshot breaks the invariant: balances sum to " .. sum .. ", expected "
          .. (t.deposited - t.withdrawn), 0)
  end
  balances, deposited, withdrawn = t.accounts, t.deposited, t.withdrawn
end

return M
