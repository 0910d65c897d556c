"""Reading an offline wandb run's ``.wandb`` file back (offline runs write no summary JSON).

The file is a LevelDB-style log: a 7-byte ``:W&B`` header, then 32 KiB blocks of records, each
with a 7-byte header (crc32, little-endian length, type: 1 full, 2 first, 3 middle, 4 last)
around a serialised ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    position, records, pieces = HEADER, [], []
    while position + HEADER <= len(data):
        if BLOCK - position % BLOCK < HEADER:  # a block's tail too short for a header is padding
            position += BLOCK - position % BLOCK
            continue
        length = int.from_bytes(data[position + 4 : position + 6], "little")
        kind = data[position + 6]
        payload = data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if kind == FULL:
            records.append(payload)
        elif kind == FIRST:
            pieces = [payload]
        elif kind == MIDDLE:
            pieces.append(payload)
        elif kind == LAST:
            records.append(b"".join([*pieces, payload]))
    return records


def history(path: Path) -> list[dict[str, object]]:
    """Every ``wandb.log`` row of the run, as dicts of key -> decoded JSON value."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for raw in raw_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "history":
            continue
        row = {}
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            row[key] = json.loads(item.value_json)
        rows.append(row)
    return rows


def config(path: Path) -> dict[str, object]:
    """The run's config as the run file records it (every ``config`` update, in order)."""
    from wandb.proto import wandb_internal_pb2

    values: dict[str, object] = {}
    for raw in raw_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "config":
            continue
        for item in record.config.update:
            values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values
