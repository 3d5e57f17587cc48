-- etcd writes: POST /v3/kv/put (JSON gateway; base64 key and value),
-- random 16-byte key, 100-byte value.
local c = dofile((os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/common.lua")
local v64 = c.base64(c.value)
local headers = { ["Content-Type"] = "application/json" }
setup, init, done = c.setup, c.init, c.done
function request()
  return wrk.format("POST", "/v3/kv/put", headers,
    '{"key":"' .. c.base64(c.random_key()) .. '","value":"' .. v64 .. '"}')
end
