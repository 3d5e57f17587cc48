-- etcd preload: keys k000000000000000 .. N-1 (BENCH_LOAD_FROM, BENCH_LOAD_N),
-- 100-byte values, BENCH_TXN puts per /v3/kv/txn (etcd's default
-- --max-txn-ops is 128). One wrk thread (-t1); writes BENCH_DONE_FILE once
-- every key is acknowledged.
local c = dofile((os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/common.lua")
local from = tonumber(os.getenv("BENCH_LOAD_FROM") or "0")
local n = tonumber(os.getenv("BENCH_LOAD_N") or "10000")
local batch = tonumber(os.getenv("BENCH_TXN") or "128")
local headers = { ["Content-Type"] = "application/json" }
local v64 = c.base64(c.value)
local next_key, acked, failed, stopping = from, 0, 0, false
local want = math.ceil(n / batch)
init, done = c.init, c.done
-- wrk calls request() once on thread 0's state to check the script and
-- throws the answer away: that first call must not consume a batch.
local verified = false
function request()
  if not verified then
    verified = true
    return wrk.format("POST", "/v3/maintenance/status", headers, "{}")
  end
  if next_key >= from + n then
    return wrk.format("POST", "/v3/maintenance/status", headers, "{}")
  end
  local ops = {}
  local last = math.min(next_key + batch, from + n)
  for i = next_key, last - 1 do
    ops[#ops + 1] = '{"requestPut":{"key":"' .. c.base64(c.key(i)) .. '","value":"' .. v64 .. '"}}'
  end
  next_key = last
  return wrk.format("POST", "/v3/kv/txn", headers, '{"success":[' .. table.concat(ops, ",") .. ']}')
end
function response(status, hdrs, body)
  if body:find('"version"', 1, true) and not body:find('"succeeded"', 1, true) then
    return -- a filler status request
  end
  if status == 200 then acked = acked + 1 else failed = failed + 1 end
  if acked + failed >= want and not stopping then
    stopping = true
    c.load_done()
  end
end
