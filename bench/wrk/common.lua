-- bench/wrk/common.lua: shared by the wrk scripts of bench/compare.sh.
-- Loaded with dofile() from the scripts next to it; wrk runs LuaJIT (5.1).
--
-- Environment:
--   BENCH_KEYS   keys preloaded by compare.sh ("k" .. 15 digits, 0 .. N-1);
--                reads pick one at random so they hit (default 10000)
--
-- Every script prints, from done(), one machine-readable line:
--   WRKJSON {"requests":n,"errors":n,"seconds":s,"rps":r,"p50_us":..,"p99_us":..,"max_us":..}
-- where rps counts only 2xx answers (wrk counts other statuses as errors).
local M = {}

local alnum = "abcdefghijklmnopqrstuvwxyz0123456789"

M.nkeys = tonumber(os.getenv("BENCH_KEYS") or "10000")

-- A random 16-byte key over [a-z0-9].
function M.random_key()
  local t = {}
  for i = 1, 16 do
    local r = math.random(1, #alnum)
    t[i] = alnum:sub(r, r)
  end
  return table.concat(t)
end

-- The i-th preloaded key (16 bytes).
function M.key(i)
  return string.format("k%015d", i)
end

-- A random preloaded key.
function M.random_preloaded()
  -- Preload scripts: wrk only ends at its deadline or on SIGINT, so once every
-- batch is answered they write BENCH_DONE_FILE (compare.sh waits for it and
-- stops wrk) and stop this thread.
function M.load_done()
  local f = io.open(os.getenv("BENCH_DONE_FILE") or "/dev/null", "w")
  if f then f:write("done\n") f:close() end
  wrk.thread:stop()
end

return M.key(math.random(0, M.nkeys - 1))
end

-- 100 bytes of value.
M.value = string.rep("v", 100)

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
function M.base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = math.floor(n / 262144) % 64
    local c2 = math.floor(n / 4096) % 64
    local c3 = math.floor(n / 64) % 64
    local c4 = n % 64
    out[#out + 1] = b64chars:sub(c1 + 1, c1 + 1) .. b64chars:sub(c2 + 1, c2 + 1) ..
      (b and b64chars:sub(c3 + 1, c3 + 1) or "=") .. (c and b64chars:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

local thread_no = 0
function M.setup(thread)
  thread_no = thread_no + 1
  thread:set("seed", thread_no * 7919 + os.time())
end

function M.init()
  math.randomseed(seed or os.time())
end

function M.done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  local secs = summary.duration / 1e6
  local ok = summary.requests - e.status
  io.write(string.format(
    'WRKJSON {"requests":%d,"errors":%d,"status_errors":%d,"seconds":%.3f,"rps":%.1f,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, errors, e.status, secs, ok / secs,
    latency:percentile(50), latency:percentile(99), latency.max))
end

-- Preload scripts: wrk only ends at its deadline or on SIGINT, so once every
-- batch is answered they write BENCH_DONE_FILE (compare.sh waits for it and
-- stops wrk) and stop this thread.
function M.load_done()
  local f = io.open(os.getenv("BENCH_DONE_FILE") or "/dev/null", "w")
  if f then f:write("done\n") f:close() end
  wrk.thread:stop()
end

return M
