local t = { id = "node-2", bootstrap_expect = 3, join = {"127.0.0.1:8001", "[::1]:8002"} }
t.election_timeout_ms = { min = 150, max = 300 }
t.log_level = "debug"
t.lease_reads = true
t.data_dir = env("MR_FUZZ_NO_SUCH_VAR") or "data/x"
return t
