-- moonraft preload: keys k000000000000000 .. N-1 (BENCH_LOAD_FROM, BENCH_LOAD_N),
-- 100-byte values. With BENCH_MPUT=n (> 0) each request is one
-- {"op":"mput","items":{...}} command of n keys, else one PUT per key.
-- Run with one wrk thread (-t1): the counter lives in that thread's Lua state.
-- Once every key is acknowledged it writes BENCH_DONE_FILE (compare.sh then
-- stops wrk with SIGINT).
local c = dofile((os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/common.lua")
local from = tonumber(os.getenv("BENCH_LOAD_FROM") or "0")
local n = tonumber(os.getenv("BENCH_LOAD_N") or "10000")
local batch = tonumber(os.getenv("BENCH_MPUT") or "0")
local headers = { ["Content-Type"] = "application/json" }
local val = '"' .. c.value .. '"'
local next_key, acked, failed, stopping = from, 0, 0, false
local want = batch > 0 and math.ceil(n / batch) or n
init, done = c.init, c.done
-- wrk calls request() once on thread 0's state to check the script and
-- throws the answer away: that first call must not consume a batch.
local verified = false
function request()
  if not verified then
    verified = true
    return wrk.format("GET", "/v1/status")
  end
  if next_key >= from + n then
    return wrk.format("GET", "/v1/status")
  end
  if batch > 0 then
    local parts = {}
    local last = math.min(next_key + batch, from + n)
    for i = next_key, last - 1 do
      parts[#parts + 1] = '"' .. c.key(i) .. '":' .. val
    end
    next_key = last
    return wrk.format("POST", "/v1/command", headers,
      '{"op":"mput","items":{' .. table.concat(parts, ",") .. '}}')
  end
  local k = c.key(next_key)
  next_key = next_key + 1
  return wrk.format("PUT", "/v1/kv/" .. k, headers, val)
end
function response(status, hdrs, body)
  if body:find('"role"', 1, true) then return end -- a filler request
  if status == 200 then acked = acked + 1 else failed = failed + 1 end
  if acked + failed >= want and not stopping then
    stopping = true
    c.load_done()
  end
end
