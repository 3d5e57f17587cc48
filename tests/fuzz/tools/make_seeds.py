#!/usr/bin/env python3
"""Writes the seed corpora of fuzz_wal and fuzz_snapshot (binary formats with
CRC32C checksums). Run from the repository root: python3 tests/fuzz/tools/make_seeds.py
Formats: src/storage/storage.h, storage_snap.c, src/node/node_snap.c,
node_entry.c, node_idem.c and mr_raft_config_encode in src/raft/raft.h."""
import struct, os

def _table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t
T = _table()

def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = T[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF

def pad8(n): return (n + 7) & ~7

def seg_header(first):
    h = b"MRWALSEG" + struct.pack("<I", 1) + b"\0" * 4 + struct.pack("<Q", first) + b"\0" * 4
    return h + struct.pack("<I", crc32c(h))

def record(term, index, typ, data, sync_start):
    body = struct.pack("<IQQB3xI", len(data), term, index, typ, sync_start)
    payload = data + b"\0" * (pad8(len(data)) - len(data))
    crc = crc32c(payload, crc32c(body))
    return struct.pack("<I", crc) + body + payload

def conf(servers):
    out = struct.pack("<BI", 1, len(servers))
    for sid, role, ctx in servers:
        out += struct.pack("<QBI", sid, role, len(ctx)) + ctx
    return out

def entry(time_ms, key, cmd):
    return struct.pack("<BBHQ", 1, 1, len(key), time_ms) + key + cmd

def meta(term, vote, node, cluster, log_start):
    m = b"MRMETA01" + struct.pack("<QQQQQ", term, vote, node, cluster, log_start) + b"\0" * 12
    return m + struct.pack("<I", crc32c(m))

CONF3 = conf([(11, 1, b"127.0.0.1:7001 127.0.0.1:8001"), (12, 1, b"127.0.0.1:7002"),
              (13, 2, b"")])

def segment(first, entries, group_every=2, tail_zero=64):
    out = seg_header(first)
    idx = first
    ss = len(out)
    for n, (term, typ, data) in enumerate(entries):
        if n % group_every == 0:
            ss = len(out)
        out += record(term, idx, typ, data, ss)
        idx += 1
    return out + b"\0" * tail_zero

def w(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)

SEP = b"MRFZSEP!"
ents = [(1, 3, CONF3), (1, 2, b""),
        (1, 1, entry(1700000000000, b"", b'{"op":"put","key":"a","value":1}')),
        (2, 1, entry(1700000000100, b"req-42", b'{"op":"cas","key":"a","old":1,"new":[1,2.5,"x"]}')),
        (2, 1, entry(1700000000200, b"", b'{"op":"delete","key":"a"}'))]
seg1 = segment(1, ents)
seg6 = segment(6, [(3, 2, b""), (3, 1, entry(5, b"k", b'{"op":"get","key":"\\u00e9"}'))])
d = "tests/fuzz/corpus/wal/"
w(d + "scan_valid", bytes([0x00]) + seg1)
w(d + "scan_last_torn", bytes([0x01]) + seg1[:-64 - 10] + b"\xff" * 10)
w(d + "scan_fixcrc", bytes([0x05]) + seg_header(1) + record(1, 1, 1, b"x" * 13, 32)[:4] +
  struct.pack("<IQQB3xI", 13, 1, 1, 1, 32) + b"y" * 16)
w(d + "scan_bad_header_last", bytes([0x01]) + b"MRWALSEX" + seg1[8:])
w(d + "recover_two_segments", bytes([0x08]) + seg1 + SEP + seg6)
w(d + "recover_rw_torn", bytes([0x28]) + seg1 + SEP + seg6[:-64 - 20])
w(d + "recover_raw_meta_dump", bytes([0x58]) + meta(3, 11, 11, 7, 1) + SEP + seg1)
w(d + "recover_gap", bytes([0x48]) + seg1 + SEP + segment(9, [(3, 2, b"")]))

# Snapshots: header, membership blob, node payload.
def idem(recs):
    out = struct.pack("<Q", len(recs))
    for index, status, key, result in recs:
        out += struct.pack("<QIII", index, status & 0xFFFFFFFF, len(key), len(result)) + key + result
    return out

def node_payload(idem_bytes, sm):
    return b"MRNS" + struct.pack("<IQ", 1, len(idem_bytes)) + idem_bytes + sm

def snapfile(index, term, conf_blob, payload):
    h = b"MRSNAP01" + struct.pack("<QQQII", index, term, len(payload), len(conf_blob),
                                   crc32c(payload)) + b"\0" * 12
    return h + struct.pack("<I", crc32c(conf_blob, crc32c(h))) + conf_blob + payload

KV = b'{"data":{"a":1,"b":{"x":[1,2,3]},"c":"\\u00e9t\\u00e9"},"format":"moonraft-kv/1"}'
ID = idem([(4, 0, b"req-42", b'{"ok":true}'), (5, (-19990) & 0xFFFFFFFF, b"req-43", b"script error")])
d = "tests/fuzz/corpus/snapshot/"
good = snapfile(5, 2, CONF3, node_payload(ID, KV))
w(d + "read_valid", bytes([0x00]) + good)
w(d + "restore_valid", bytes([0x06]) + good)
w(d + "restore_empty_kv", bytes([0x06]) + snapfile(1, 1, conf([(1, 1, b"")]),
  node_payload(idem([]), b'{"data":{},"format":"moonraft-kv/1"}')))
w(d + "restore_fix_bad_sm", bytes([0x07]) + snapfile(9, 3, CONF3, node_payload(idem([]), b'{"data":[1],"format":"x"}'))[:-1] + b"]")
w(d + "read_bad_crc", bytes([0x02]) + good[:-1] + b"!")
w(d + "fix_truncated_conf", bytes([0x03]) + good[:60])
