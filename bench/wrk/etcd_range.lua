-- etcd reads: POST /v3/kv/range of one preloaded key; linearizable by
-- default, BENCH_CONSISTENCY=stale sends "serializable": true.
local c = dofile((os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/common.lua")
local serial = os.getenv("BENCH_CONSISTENCY") == "stale"
local headers = { ["Content-Type"] = "application/json" }
setup, init, done = c.setup, c.init, c.done
function request()
  local b = '{"key":"' .. c.base64(c.random_preloaded()) .. '"' ..
    (serial and ',"serializable":true}' or '}')
  return wrk.format("POST", "/v3/kv/range", headers, b)
end
