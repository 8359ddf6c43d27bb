"""W&B's offline run file (``run-<id>.wandb``) read back with the wandb package's own record type.

wandb 0.31 has no Python reader of its own any more (its ``datastore`` moved into the Go core), so
this walks the file's framing, LevelDB's log format behind a ``:W&B`` header (32 KiB blocks of
chunks: crc32, length, type; a record spans FIRST..MIDDLE..LAST chunks), and parses each record
with ``wandb.proto.wandb_internal_pb2.Record``. A file whose writer was killed ends in a torn or
half-written chunk: reading stops there, with every whole record before it (what is durable).
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2  # lazily: wandb is the tracking extra's

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, pending, out = HEADER, b"", []
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a chunk header is padding
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0:
            continue
        if len(chunk) < length or zlib.crc32(bytes([kind]) + chunk) != crc:
            break  # the writer died mid-chunk: what came before is all that is durable
        pending += chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def read_run(path: Path) -> dict:
    """The run record's fields, its config, its history rows and summary (key -> value), its exit code."""
    run, config, history, summary, exit_code = None, {}, [], {}, None
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "exit":
            exit_code = record.exit.exit_code
    return {
        "id": run.run_id,
        "group": run.run_group,
        "job_type": run.job_type,
        "name": run.display_name,
        "tags": list(run.tags),
        "config": config,
        "history": history,
        "summary": summary,
        "exit_code": exit_code,
    }


def last_step(files: list[Path]) -> int:
    """The highest history ``_step`` the run files hold: the last point W&B made durable (0 if none)."""
    best = 0
    for path in files:
        try:
            found = records(path)
        except (OSError, ValueError):
            continue
        for record in found:
            if record.WhichOneof("record_type") == "history":
                for item in record.history.item:
                    if (item.key or "/".join(item.nested_key)) == "_step":
                        best = max(best, int(json.loads(item.value_json)))
    return best
