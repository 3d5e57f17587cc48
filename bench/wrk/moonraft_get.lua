-- moonraft reads: GET /v1/kv/{preloaded key}, linearizable by default;
-- BENCH_CONSISTENCY=stale (or lease) appends ?consistency=...
local c = dofile((os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/common.lua")
local cons = os.getenv("BENCH_CONSISTENCY")
local suffix = (cons and cons ~= "" and cons ~= "linearizable") and ("?consistency=" .. cons) or ""
setup, init, done = c.setup, c.init, c.done
function request()
  return wrk.format("GET", "/v1/kv/" .. c.random_preloaded() .. suffix)
end
