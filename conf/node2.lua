-- conf/node2.lua: node n2 of a three-node cluster on this machine.
--
-- A config file is plain Lua returning a table; it may compute values
-- (env("NAME") reads an environment variable, nil when unset). Unknown keys,
-- wrong types and impossible values stop the node with a message naming the
-- key (exit status 2). Command-line flags override keys: every key has a
-- flag spelled with dashes (--heartbeat-ms 100); `moonraft --help` lists them.
-- Relative paths are relative to the directory the node is started from.
--
-- Same as node1.lua but for n2; see node1.lua for every key explained.

local base_raft, base_http = 7000, 8000
local n = 2

return {
  -- This node's id: 1-64 characters from [A-Za-z0-9_.-]. Required.
  id = "n" .. n,

  -- Where the write-ahead log, metadata and snapshots live. Default "data/<id>".
  data_dir = "data/n" .. n,

  -- "host:port" for traffic between nodes. Default: this node's entry in
  -- peers, else "127.0.0.1:7001".
  raft_addr = "127.0.0.1:" .. (base_raft + n),

  -- "host:port" for the HTTP/JSON API. Default "127.0.0.1:8001".
  http_addr = "127.0.0.1:" .. (base_http + n),

  -- The Lua state machine (DESIGN.md "The Lua state machine contract").
  -- Default: the kv script built into the binary (the same bytes as
  -- lua/kv.lua). Every node must run the same script.
  -- state_machine = "/etc/moonraft/app.lua",

  -- How the cluster forms. Choose ONE of:
  --   peers = { id = "raft host:port" or {raft = "...", http = "..."} }
  --       a fixed initial membership, listed identically on every node and
  --       including this one;
  --   bootstrap_expect = N (+ join): start a new cluster once N nodes know
  --       each other (integer >= 1);
  --   join = "host:port" or {"host:port", ...}: join an existing cluster
  --       through any of its members' HTTP addresses (http_addr).
  -- None of them is fine for a node whose data_dir already holds state.
  peers = {
    n1 = { raft = "127.0.0.1:7001", http = "127.0.0.1:8001" },
    n2 = { raft = "127.0.0.1:7002", http = "127.0.0.1:8002" },
    n3 = { raft = "127.0.0.1:7003", http = "127.0.0.1:8003" },
  },

  -- Timing (ms). The leader sends a heartbeat every heartbeat_ms (1..60000,
  -- default 50). A follower that hears nothing for a random time in
  -- [min, max] starts an election: min must be above heartbeat_ms (ten times
  -- is typical) and max above min. Default {300, 600}.
  heartbeat_ms = 50,
  election_timeout_ms = { 300, 600 },

  -- Raft options. pre_vote: a candidate first checks it could win, so a
  -- partitioned node does not disrupt the cluster (default true).
  -- check_quorum: a leader that cannot reach a majority steps down (default
  -- true). lease_reads: allow ?consistency=lease reads, which trust clock
  -- rates to skip a round trip (default false).
  pre_vote = true,
  check_quorum = true,
  lease_reads = false,

  -- Replication batching: entries per AppendEntries (1..100000, default 512)
  -- and AppendEntries in flight per follower (1..4096, default 64).
  max_append_entries = 512,
  max_inflight = 64,

  -- Snapshot after this many applied entries (>= 1, default 10000), keeping
  -- snapshot_trailing entries in the log for slow followers (default 1000).
  snapshot_entries = 10000,
  snapshot_trailing = 1000,
  -- MiB of log entry payloads kept in memory (default 8; 0 = none): older
  -- applied ones are read back from the WAL when a follower needs them.
  log_cache_mb = 8,
  -- ...and once the log since the last snapshot is this % of its size
  -- (default 25; 0 = by entry count only).
  snapshot_log_percent = 25,
  -- ...or, for a state of 1 MiB or more, this % of its size, capped at
  -- snapshot_log_mb (default 100: a growing state is rewritten about once per
  -- its own size of log, not every time it grows by a quarter).
  snapshot_log_percent_small = 100,
  -- Also snapshot once the log since the last one holds this many MiB
  -- (default 32), whatever the count.
  snapshot_log_mb = 32,

  -- WAL segment size in MiB (1..4096, default 64). fsync = false skips
  -- fdatasync: only for tests and benchmarks, never for data you want back.
  wal_segment_mb = 64,
  fsync = true,

  -- HTTP limits: request body (64 B..1 GiB, default 1 MiB) and head (1 KiB..
  -- 1 MiB, default 16 KiB) sizes, idle keep-alive timeout (default 60000 ms),
  -- time before a request answers 504 (default 5000 ms), open connections
  -- (default 1024).
  max_body_bytes = 1024 * 1024,
  max_header_bytes = 16 * 1024,
  http_idle_timeout_ms = 60000,
  request_timeout_ms = 5000,
  max_connections = 1024,

  -- Secrets (strings, unset by default = no check). client_token guards the
  -- data API (Authorization: Bearer ...), admin_token the membership,
  -- transfer and snapshot endpoints, cluster_secret the peer connections.
  -- Read them from the environment rather than writing them here.
  client_token = env("MOONRAFT_CLIENT_TOKEN"),
  admin_token = env("MOONRAFT_ADMIN_TOKEN"),
  cluster_secret = env("MOONRAFT_CLUSTER_SECRET"),

  -- Lua sandbox limits; they MUST be equal on every node, or a command that
  -- hits one could fail on some nodes only. The budget of one apply/query
  -- counts Lua instructions plus work done in C for the script (pattern
  -- steps, JSON values, 64-byte units of long strings built), 1000..1e12,
  -- default 10,000,000 (tens of milliseconds). The Lua heap cap in MiB
  -- (1..1048576, default 1024).
  lua_instruction_budget = 10000000,
  lua_memory_mb = 1024,

  -- "debug", "info", "warn" or "error" (default "info").
  log_level = "info",
}
