return { id = "n1", peers = "n1=127.0.0.1:7001,n2=127.0.0.1:7002", heartbeat_ms = 1000, election_timeout_ms = "100,200" }
