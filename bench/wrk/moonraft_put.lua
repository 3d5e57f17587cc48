-- moonraft writes: PUT /v1/kv/{random 16-byte key} with a 100-byte JSON string.
local c = dofile((os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/common.lua")
local body = '"' .. c.value .. '"'
local headers = { ["Content-Type"] = "application/json" }
setup, init, done = c.setup, c.init, c.done
function request()
  return wrk.format("PUT", "/v1/kv/" .. c.random_key(), headers, body)
end
