#!/bin/sh
# bench/report.sh RESULTS.json: print the table of a bench/compare.sh run,
# with the targets of issue 7 marked met or MISSED. Needs jq.
set -u
F=${1:?usage: bench/report.sh bench/results/<time>.json}
jq -r '
def r1: (. * 10 | round) / 10;
def ms: if . < 0 then "-" else (. / 1000 | r1 | tostring) end;
def ratio(a; b): if b > 0 then ((a / b) * 100 | round) / 100 else null end;
def med: sort | if length == 0 then null else .[(length / 2 | floor)] end;
def pad(n): tostring | if length >= n then . else . + (" " * (n - length)) end;
def lpad(n): tostring | if length >= n then . else (" " * (n - length)) + . end;
def mark(ok): if ok then "met" else "MISSED" end;
.rows as $rows
| ($rows | map(select(.kind == "wrk"))) as $w
| ($rows | map(select(.kind == "floor")) | .[0].floor) as $fl
| def cell(sys; op; t; c): ($w | map(select(.system == sys and .op == op and .target == t and .conns == c)) | .[0].r);

  "moonraft vs etcd, 3 nodes each on 127.0.0.1, \(.cpus) CPUs shared with the clients, \(.secs_per_run) s per cell, all on the leader",
  (if ($rows | map(select(.kind == "info" and .etcd_grpc == false)) | length) > 0
   then "NOTE: the etcd gRPC benchmark tool could not be built (bench/etcd-benchmark.sh): the JSON gateway is the only etcd anchor"
   else empty end),
  "",
  ("op    clients  system    " + ("req/s" | lpad(9)) + ("p50" | lpad(8)) + ("p99" | lpad(8)) + ("CPU/req" | lpad(9))
   + "  snapshots  | vs best etcd: " + ("req/s" | lpad(6)) + ("p99" | lpad(6))),
  ( [$w[] | {op, conns}] | unique_by([.op, .conns])
    | sort_by([(.op | if . == "write" then 0 elif . == "read" then 1 else 2 end), .conns])[]
    | . as $k
    | ([cell("etcd-grpc"; $k.op; "leader"; $k.conns), cell("etcd"; $k.op; "leader"; $k.conns)]
       | map(select(. != null and (.rps // 0) > 0))) as $anchors
    | (($anchors | map(.rps) | max) // 0) as $best_rps
    | (($anchors | map(.p99_us | select(. > 0)) | min) // 0) as $best_p99
    | (["moonraft", "etcd-grpc", "etcd"][] as $s
       | cell($s; $k.op; "leader"; $k.conns) as $r
       | select($r != null)
       | ($k.op | pad(6)) + ($k.conns | lpad(7)) + "  " + (if $s == "etcd" then "etcd-gw" else $s end | pad(10))
         + (($r.rps // 0) | round | lpad(9)) + (($r.p50_us // -1) | ms | lpad(8)) + (($r.p99_us // -1) | ms | lpad(8))
         + ((if ($r.cpu_us_per_req // -1) < 0 then "-" else ($r.cpu_us_per_req | round | tostring) + " us" end) | lpad(9))
         + "  " + (($r.snapshots // []) | map(if . < 0 then "?" else tostring end) | join("/") | if . == "" then "-" else . end | pad(10))
         + (if $s == "moonraft" then " | " + " " * 14
              + ((ratio($r.rps // 0; $best_rps) // "-") | lpad(6)) + ((ratio($r.p99_us // 0; $best_p99) // "-") | lpad(6))
            else "" end)
         + (if (($r.errors // 0) + ($r.status_errors // 0)) > 0 then "   errors \(($r.errors // 0) + ($r.status_errors // 0))" else "" end))
  ),
  "(latencies in ms; CPU/req: utime+stime of the 3 server processes and their snapshot children per",
  " successful request; snapshots: taken by n1/n2/n3 during the cell; ratios: moonraft / the better",
  " etcd anchor (higher req/s, lower p99) of etcd-grpc (the etcd benchmark tool) and etcd-gw (JSON gateway, wrk))",
  ( ($rows | map(select(.kind == "snap_ab"))) as $ab
    | ($ab | map(select(.mode == "default")) | .[0]) as $d
    | ($ab | map(select(.mode == "pushed_out")) | .[0]) as $o
    | select($d and $o)
    | "",
      "snapshots A/B (moonraft writes, \($d.conns) clients, fresh cluster each):",
      "  default snapshots:    \($d.r.rps | round) req/s, p50 \($d.r.p50_us | ms) ms, p99 \($d.r.p99_us | ms) ms, CPU/req \($d.r.cpu_us_per_req) us, snapshots \($d.r.snapshots | map(tostring) | join("/"))",
      "  snapshots pushed out: \($o.r.rps | round) req/s, p50 \($o.r.p50_us | ms) ms, p99 \($o.r.p99_us | ms) ms, CPU/req \($o.r.cpu_us_per_req) us, snapshots \($o.r.snapshots | map(tostring) | join("/"))",
      "  p99 with / without snapshots <= 1.2: \(ratio($d.r.p99_us; $o.r.p99_us))x \(mark($d.r.p99_us <= 1.2 * $o.r.p99_us)); req/s \(ratio($d.r.rps; $o.r.rps))x" ),
  "",
  (if $fl then
    "floor: fdatasync \($fl.fdatasync_per_s)/s, p50 \($fl.fdatasync_p50_us) us (p99 \($fl.fdatasync_p99_us) us); loopback round trip p50 \($fl.loopback_rtt_p50_us) us (p99 \($fl.loopback_rtt_p99_us) us); one write >= \($fl.fdatasync_p50_us + $fl.loopback_rtt_p50_us) us"
    + (if $fl.shared3_majority_p50_us then "; 3 syncs at once on this disk, 2nd durable: p50 \($fl.shared3_majority_p50_us) us (p99 \($fl.shared3_majority_p99_us) us): one write of 3 nodes on one disk >= \($fl.shared3_majority_p50_us + $fl.loopback_rtt_p50_us) us" else "" end)
   else empty end),
  ( ["moonraft", "etcd"][] as $s
    | ($rows | map(select(.kind == "failover" and .system == $s) | .ms)) as $fo
    | ($rows | map(select(.kind == "rss_idle" and .system == $s) | .kib)) as $ri
    | ($rows | map(select(.kind == "rss_full" and .system == $s) | .kib)) as $rf
    | ($rows | map(select(.kind == "disk" and .system == $s) | .bytes)) as $d
    | ($rows | map(select(.kind == "restart" and .system == $s)) | .[0]) as $rs
    | ($rows | map(select(.kind == "load" and .system == $s)) | last) as $ld
    | "\($s | pad(9)) failover median \($fo | med // "-") ms (rounds \($fo | map(tostring) | join(", ")))"
      + "; RSS idle \($ri | map(tostring) | join("/")) KiB, with keys \($rf | map(tostring) | join("/")) KiB"
      + "; data dir \($d | map(. / 1048576 | r1 | tostring) | join("/")) MiB"
      + (if $rs then "; restart (\($rs.keys) keys) -> first write \($rs.ms) ms" else "" end)
      + (if $ld then "; load of \($ld.keys) keys \($ld.ms) ms" else "" end)
  ),
  ( $rows | map(select(.kind == "stall_baseline")) | .[0] // empty
    | "moonraft write at 1 conn before snapshots: p50 \(.r.p50_us | ms) ms, max \(.r.max_us | ms) ms" ),
  ( $rows | map(select(.kind == "stall_snapshot")) | .[0] // empty
    | "moonraft longest write while 3 nodes snapshot: \(.r.max_us // -1 | ms) ms (snapshots took \(.snapshot_ms) ms, \(.nodes_done)/3 nodes)" ),
  ( $rows | map(select(.kind == "stall_catchup")) | .[0] // empty
    | "moonraft longest write while n4 catches up by snapshot: \(.r.max_us // -1 | ms) ms (caught up in \(.catchup_ms) ms, ok=\(.caught_up))" ),
  "",
  "targets (issue 7):",
  ( [64, 256][] as $c
    | cell("moonraft"; "write"; "leader"; $c) as $m | cell("etcd"; "write"; "leader"; $c) as $e
    | select($m and $e)
    | "  writes/s at \($c) conns >= 2x etcd: \(ratio($m.rps; $e.rps))x \(mark(($m.rps / ($e.rps + 0.001)) >= 2))"
      + "; p99 <= 0.5x etcd: \(ratio($m.p99_us; $e.p99_us))x \(mark($m.p99_us <= 0.5 * $e.p99_us))" ),
  ( cell("moonraft"; "write"; "leader"; 1) as $m | select($m and $fl)
    | ($fl.fdatasync_p50_us + $fl.loopback_rtt_p50_us) as $floor
    | "  single write p50 <= 1.5x (fdatasync p50 + rtt p50 = \($floor) us): \($m.p50_us) us = \(ratio($m.p50_us; $floor))x \(mark($m.p50_us <= 1.5 * $floor))"
      + (if $fl.shared3_majority_p50_us then
           ($fl.shared3_majority_p50_us + $fl.loopback_rtt_p50_us) as $f3
           | "; against the shared-disk floor (2nd of 3 concurrent syncs + rtt = \($f3) us): \(ratio($m.p50_us; $f3))x"
         else "" end) ),
  ( cell("moonraft"; "read"; "leader"; 64) as $m | cell("etcd"; "read"; "leader"; 64) as $e
    | select($m and $e)
    | "  linearizable reads/s at 64 conns >= 2x etcd: \(ratio($m.rps; $e.rps))x \(mark(($m.rps / ($e.rps + 0.001)) >= 2))" ),
  ( ($rows | map(select(.kind == "failover" and .system == "moonraft") | .ms) | med) as $m
    | ($rows | map(select(.kind == "failover" and .system == "etcd") | .ms) | med) as $e
    | select($m)
    | "  failover median < 1000 ms: \($m) ms \(mark($m < 1000)) (etcd \($e // "-") ms, \(if $e then ($e - $m | tostring) + " ms slower" else "-" end))" ),
  ( ["rss_idle", "rss_full"][] as $k
    | ($rows | map(select(.kind == $k and .system == "moonraft") | .kib) | max) as $m
    | ($rows | map(select(.kind == $k and .system == "etcd") | .kib) | min) as $e
    | select($m and $e)
    | "  \($k) <= 1/4 etcd: moonraft max \($m) KiB vs etcd min \($e) KiB = \(ratio($m; $e))x \(mark($m * 4 <= $e))" ),
  ( $rows | map(select(.kind == "restart" and .system == "moonraft")) | .[0] // empty
    | "  restart with \(.keys) keys ready < 1000 ms: \(.ms) ms \(mark(.ms < 1000 and .ok == 1))" ),
  ( $rows | map(select(.kind == "stall_snapshot")) | .[0] // empty
    | "  snapshot write stall <= 50 ms: \(.r.max_us // -1 | ms) ms \(mark((.r.max_us // 1e12) <= 50000))" ),
  ( $rows | map(select(.kind == "stall_catchup")) | .[0] // empty
    | "  catch-up write stall (no target; same 50 ms bar): \(.r.max_us // -1 | ms) ms \(mark((.r.max_us // 1e12) <= 50000))" )
' "$F"
