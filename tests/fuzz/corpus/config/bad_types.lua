return { id = 42, peers = { n1 = { raft = 7001 } }, heartbeat_ms = "fast", [1] = true }
