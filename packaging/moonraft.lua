-- /etc/moonraft/moonraft.lua: the configuration of this machine's moonraft
-- node (plain Lua returning a table; docs/configuration.md lists every key,
-- and /usr/share/moonraft/conf/ holds a fully commented three-node example).
--
-- As shipped it runs a single-node cluster on the loopback interface, with
-- the built-in kv state machine. For a real cluster give every node its own
-- id and addresses and list the same peers on each (or use bootstrap_expect /
-- join), then `systemctl restart moonraft`.
--
-- Secrets come from the environment: systemd reads /etc/moonraft/moonraft.env
-- (MOONRAFT_CLIENT_TOKEN=..., mode 0600) if it exists.

return {
  id = "n1",
  data_dir = "/var/lib/moonraft",
  raft_addr = "127.0.0.1:7001",
  http_addr = "127.0.0.1:8001",
  bootstrap_expect = 1,

  -- state_machine = "/etc/moonraft/app.lua",  -- default: the built-in kv.lua

  client_token = env("MOONRAFT_CLIENT_TOKEN"),
  admin_token = env("MOONRAFT_ADMIN_TOKEN"),
  cluster_secret = env("MOONRAFT_CLUSTER_SECRET"),

  log_level = "info",
}
