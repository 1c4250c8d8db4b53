"""Persistent local state: the moto server's DynamoDB items and SQS messages kept in a directory
(`.data/` by default), so `make run` restarts where it stopped — also after `kill -9`.

This runs inside the moto server process (`local.emulator`), next to the data:

- **Journal.** Every DynamoDB write (PutItem, UpdateItem, DeleteItem, BatchWriteItem,
  TransactWriteItems) is followed, still under the per-request lock of `local.atomic`, by a
  read-back of each item it names: the journal records the item as it now is (or its deletion),
  never the request, so replaying it needs no condition and no clock. Once a second the writes
  collected so far and, when it changed, a copy of every SQS message (body, attributes, receive
  count, delay and visibility instants) go to the journal file as one JSON line. The two are
  captured under the same lock, so a line is a consistent cut of both services: a killed process
  loses at most the last second or so, and a line cut short by the kill is ignored on restore.
- **Compaction.** When the journal outgrows its base, the base and the journal are merged into
  a new generation (`base.<n>.json` + `journal.<n>.jsonl`, named by `CURRENT`, which is switched
  with an atomic rename, so a crash at any point leaves one complete generation).
- **Restore** (asked for by the runtime once CloudFormation has created the empty tables and
  queues): the items are put back into moto's tables and the messages into its queues. Then the
  leases of the stopped process end, since nothing of it survives: run claims (`lease_until`),
  tick shard leases and concurrency slots (`holder` + `until`) are expired, and messages that were
  being processed become visible at once. A run that was executing is taken over by a worker (a
  new attempt, as on Lambda after a crash); a fire that was dispatched runs when its message comes
  due; everything else the tick finds due as usual. Run ids are deterministic and claimed with a
  conditional write, so no copy runs twice. Tick watermarks are kept as they were: the messages
  they account for are restored with them (rewinding them would re-plan fires whose messages are
  restored, and could record a late one as missed).
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = 1
FLUSH_SECONDS = 1.0
COMPACT_MIN_BYTES = 8 * 1024 * 1024
ACCOUNT = "123456789012"  # moto's default account
WRITE_ACTIONS = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
LEASE_ATTRS = ("lease_until", "until")  # epoch seconds until which a worker or a tick owns something

Attrs = dict[str, Any]  # an item in DynamoDB's JSON form: {"name": {"S": "..."}, ...}


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot store {type(value).__name__}")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_json_default)


@dataclass
class Snapshot:
    """A table-by-table image of the items plus the queues' messages, as stored."""

    tables: dict[str, dict[str, Attrs]] = field(default_factory=dict)  # table → item key → attrs
    sqs: dict[str, list[dict[str, Any]]] | None = None  # queue name → messages
    time: float | None = None  # when the newest part was captured
    frames: int = 0
    torn: bool = False  # the journal's last line was cut short (a kill mid-write): ignored

    def apply(self, frame: dict[str, Any]) -> None:
        for op, table, key, attrs in frame.get("db", []):
            items = self.tables.setdefault(table, {})
            if op == "p":
                items[key] = attrs
            else:
                items.pop(key, None)
        if frame.get("sqs") is not None:
            self.sqs = frame["sqs"]
        self.time = frame.get("t", self.time)
        self.frames += 1

    def counts(self) -> dict[str, int]:
        return {name: len(items) for name, items in sorted(self.tables.items())}


class Store:
    """The files of one state directory. Only the journal writer (one process, see the lock
    the runtime takes) changes them."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def generation(self) -> int:
        try:
            return int((self.dir / "CURRENT").read_text().strip())
        except (OSError, ValueError):
            return 0

    def base_path(self, gen: int) -> Path:
        return self.dir / f"base.{gen}.json"

    def journal_path(self, gen: int) -> Path:
        return self.dir / f"journal.{gen}.jsonl"

    def load(self) -> Snapshot:
        gen = self.generation()
        snap = Snapshot()
        if gen == 0:
            return snap
        base = json.loads(self.base_path(gen).read_text())
        if base.get("format") != FORMAT:
            raise ValueError(f"{self.base_path(gen)} has format {base.get('format')}, expected {FORMAT}")
        snap.tables = {name: dict(items) for name, items in base["tables"].items()}
        snap.sqs, snap.time = base.get("sqs"), base.get("t")
        try:
            with self.journal_path(gen).open("rb") as f:
                for raw in f:
                    try:
                        frame = json.loads(raw) if raw.endswith(b"\n") else None
                    except ValueError:
                        frame = None
                    if frame is None:
                        snap.torn = True  # only ever the last line: every earlier one was complete
                        break
                    snap.apply(frame)
        except FileNotFoundError:
            pass
        return snap

    def write_generation(self, snap: Snapshot) -> int:
        """Write `snap` as the next generation's base, switch CURRENT to it, drop the old files."""
        self.dir.mkdir(parents=True, exist_ok=True)
        old, gen = self.generation(), self.generation() + 1
        body = {"format": FORMAT, "t": snap.time, "tables": snap.tables, "sqs": snap.sqs}
        tmp = self.base_path(gen).with_suffix(".tmp")
        tmp.write_text(_dumps(body))
        os.replace(tmp, self.base_path(gen))
        self.journal_path(gen).write_bytes(b"")
        pointer = self.dir / "CURRENT.tmp"
        pointer.write_text(f"{gen}\n")
        os.replace(pointer, self.dir / "CURRENT")
        for path in (self.base_path(old), self.journal_path(old)):
            path.unlink(missing_ok=True)
        return gen


def item_key(table: Any, attrs: Attrs) -> str:
    """The item's key in a snapshot: its hash (and range) attribute values, canonical JSON."""
    key = [attrs[table.hash_key_attr]]
    if table.range_key_attr is not None:
        key.append(attrs[table.range_key_attr])
    return _dumps(key)


def _named_keys(action: str, body: dict[str, Any]) -> Iterator[tuple[str, Attrs]]:
    """(table, key or item) for each item a write request names."""
    if action in ("PutItem", "UpdateItem", "DeleteItem"):
        yield body["TableName"], body.get("Item") or body.get("Key") or {}
    elif action == "BatchWriteItem":
        for table, requests in (body.get("RequestItems") or {}).items():
            for req in requests:
                put, delete = req.get("PutRequest"), req.get("DeleteRequest")
                yield table, (put or {}).get("Item") or (delete or {}).get("Key") or {}
    elif action == "TransactWriteItems":
        for entry in body.get("TransactItems") or []:
            for kind in ("Put", "Update", "Delete"):
                if kind in entry:
                    yield entry[kind]["TableName"], entry[kind].get("Item") or entry[kind].get("Key") or {}


class Journal:
    """Collects DynamoDB writes and SQS changes in the moto server and appends them to the store."""

    def __init__(self, directory: Path, region: str, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.store = Store(directory)
        self.region = region
        self.flush_seconds = flush_seconds
        self._pending: list[list[Any]] = []
        self._last_sqs: Any = None
        self._journal: Any = None
        self._journal_bytes = 0
        self._base_bytes = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._io = threading.Lock()  # one flush at a time (the thread, a stop signal)

    # ---- moto's backends ----------------------------------------------------------------

    def _dynamodb(self) -> Any:
        from moto.dynamodb.models import dynamodb_backends

        return dynamodb_backends[ACCOUNT][self.region]

    def _sqs(self) -> Any:
        from moto.sqs.models import sqs_backends

        return sqs_backends[ACCOUNT][self.region]

    # ---- capture (request threads, under local.atomic's lock) ---------------------------------

    def after_write(self, action: str, body: dict[str, Any]) -> None:
        """Record the post-write image of every item the request names."""
        if action not in WRITE_ACTIONS:
            return
        from moto.dynamodb.models.dynamo_type import DynamoType

        tables = self._dynamodb().tables
        for name, named in _named_keys(action, body):
            table = tables.get(name)
            if table is None or table.hash_key_attr not in named:
                continue
            hash_key = DynamoType(named[table.hash_key_attr])
            range_key = DynamoType(named[table.range_key_attr]) if table.range_key_attr else None
            if table.range_key_attr is not None and table.range_key_attr not in named:
                continue
            item = table.get_item(hash_key, range_key)
            key = item_key(table, named)
            if item is None:
                self._pending.append(["d", name, key, None])
            else:
                self._pending.append(["p", name, key, item.to_json()["Attributes"]])

    def _capture_sqs(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for name, queue in self._sqs().queues.items():
            with queue._messages_lock:
                messages = list(queue._messages)
            out[name] = [
                {
                    "id": m.id,
                    "body": m.body,
                    "message_attributes": m.message_attributes,
                    "system_attributes": m.system_attributes,
                    "sent_timestamp": m.sent_timestamp,
                    "first_receive": m.approximate_first_receive_timestamp,
                    "receive_count": m.approximate_receive_count,
                    "visible_at": m.visible_at,
                    "delayed_until": m.delayed_until,
                }
                for m in messages
            ]
        return out

    # ---- flush (the journal thread) ----------------------------------------------------

    def flush(self) -> None:
        from local.atomic import DYNAMODB_LOCK

        with self._io:
            if self._journal is None:
                return  # not restored yet: never overwrite stored state with an empty emulator
            with DYNAMODB_LOCK:  # a consistent cut: no DynamoDB write between the two captures
                pending, self._pending = self._pending, []
                sqs = self._capture_sqs()
            changed_sqs = sqs != self._last_sqs
            if not pending and not changed_sqs:
                return
            frame: dict[str, Any] = {"t": time.time(), "db": pending}
            if changed_sqs:
                frame["sqs"] = sqs
                self._last_sqs = sqs
            line = (_dumps(frame) + "\n").encode()
            self._journal.write(line)  # one write() of a whole line: a kill leaves it whole or torn
            self._journal.flush()
            self._journal_bytes += len(line)
            if self._journal_bytes > max(COMPACT_MIN_BYTES, self._base_bytes):
                self._compact()

    def _compact(self) -> None:
        self._journal.close()
        snap = self.store.load()
        self._open(snap)

    def _open(self, snap: Snapshot) -> None:
        """Start a new generation holding `snap` and append to its journal from now on."""
        gen = self.store.write_generation(snap)
        self._base_bytes = self.store.base_path(gen).stat().st_size
        self._journal = self.store.journal_path(gen).open("ab")
        self._journal_bytes = 0

    def _run(self, restored: Snapshot) -> None:
        with self._io:
            self._open(restored)  # the restored state is the new generation's base
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # keep journaling; the next flush retries
                import logging

                logging.getLogger("local.state").exception("state flush failed")

    def close(self) -> None:
        """Flush what is pending (a clean stop loses nothing)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)  # it may still be writing the restored base
        self.flush()

    # ---- restore ----------------------------------------------------------------------

    def _restore_kms(self) -> int:
        return _restore_kms_keys(_kms_backend(self.region), self.store.dir / "kms.json")

    def restore(self, now: float | None = None) -> dict[str, Any]:
        """Load the stored state into the (freshly provisioned) emulator, then start journaling."""
        from moto.dynamodb.models.dynamo_type import DynamoType, Item
        from moto.sqs.models import Message

        from local.atomic import DYNAMODB_LOCK

        if self._thread is not None:
            raise RuntimeError("the state was restored already")
        started = time.monotonic()
        now = time.time() if now is None else now
        snap = self.store.load()
        skipped: list[str] = []
        items = 0
        with DYNAMODB_LOCK:
            tables = self._dynamodb().tables
            for name, stored in snap.tables.items():
                table = tables.get(name)
                if table is None:
                    skipped.append(name)
                    continue
                table.items.clear()
                for attrs in stored.values():
                    _expire_leases(attrs, now)
                    hash_key = DynamoType(attrs[table.hash_key_attr])
                    range_key = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr else None
                    item = Item(hash_key, range_key, {})
                    # The stored items were valid when written: skip moto's per-attribute size
                    # check, which recomputes the whole item's size for each attribute (4x slower).
                    dict.update(item.attrs, {k: DynamoType(v) for k, v in attrs.items()})
                    if range_key is None:
                        table.items[hash_key] = item
                    else:
                        table.items[hash_key][range_key] = item
                    items += 1
            messages = 0
            queues = self._sqs().queues
            for name, stored_messages in (snap.sqs or {}).items():
                queue = queues.get(name)
                if queue is None:
                    skipped.append(name)
                    continue
                rebuilt = []
                for m in stored_messages:
                    msg = Message(m["id"], m["body"], m.get("system_attributes") or {})
                    msg.message_attributes = m.get("message_attributes") or {}
                    msg.sent_timestamp = m.get("sent_timestamp")
                    msg.approximate_first_receive_timestamp = m.get("first_receive")
                    msg.approximate_receive_count = int(m.get("receive_count") or 0)
                    msg.delayed_until = float(m.get("delayed_until") or 0)
                    # Being processed by a worker of the stopped process: due again now.
                    msg.visible_at = 0.0
                    rebuilt.append(msg)
                with queue._messages_lock:
                    queue._messages = rebuilt
                    queue._pending_messages = set()
                    queue._messages_lock.notify_all()
                messages += len(rebuilt)
            self._last_sqs = None
        kms_keys = self._restore_kms()
        # Writing the new base takes a while for a large state: the journal thread does it before
        # its first flush (until it has, CURRENT still names the generation just restored).
        self._thread = threading.Thread(target=self._run, args=(snap,), name="state-journal", daemon=True)
        self._thread.start()
        return {
            "items": items,
            "messages": messages,
            "tables": snap.counts(),
            "snapshot_time": snap.time,
            "snapshot_age_s": round(now - snap.time, 1) if snap.time else None,
            "torn_frame_ignored": snap.torn,
            "skipped": skipped,
            "kms_keys_kept": kms_keys,
            "restore_ms": round((time.monotonic() - started) * 1000),
        }


def _kms_backend(region: str) -> Any:
    from moto.kms.models import kms_backends

    return kms_backends[ACCOUNT][region]


def _restore_kms_keys(backend: Any, path: Path) -> int:
    """The signing-secrets key (any aliased KMS key) survives a restart: stored ciphertexts name
    the key they were made under, and a decrypt names the alias. CloudFormation makes a new key
    at every start; the aliased key is given back the stored key's id and material (the alias
    stays on it), so what was encrypted before decrypts after. Its material lives in the state
    directory beside the data, as it lives in moto's memory: this is a local emulator's key."""
    stored: dict[str, dict[str, str]] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            stored = {}
    for key in list(backend.keys.values()):
        for alias in list(key.aliases):
            old = stored.get(alias)
            if old is None or old["id"] == key.id:
                continue
            backend.keys.pop(key.id, None)
            key.id, key.arn = old["id"], old["arn"]
            key.key_material = base64.b64decode(old["material"])
            for a in key.aliases.values():
                if hasattr(a, "target_key_id"):
                    a.target_key_id = key.id
            backend.keys[key.id] = key
    current = {
        alias: {"id": key.id, "arn": key.arn, "material": base64.b64encode(key.key_material).decode()}
        for key in backend.keys.values()
        for alias in key.aliases
        if isinstance(getattr(key, "key_material", None), bytes)
    }
    path.parent.mkdir(parents=True, exist_ok=True)  # a first start: nothing stored yet
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current))
    os.replace(tmp, path)
    return len(current)


def _expire_leases(attrs: Attrs, now: float) -> None:
    """Leases of the stopped process end now: its workers and ticks are gone."""
    for name in LEASE_ATTRS:
        value = attrs.get(name)
        if isinstance(value, dict) and "N" in value and float(value["N"]) >= now:
            if name == "until" and "holder" not in attrs:
                continue
            attrs[name] = {"N": str(int(now) - 1)}


# ---- the HTTP side: the runtime asks the emulator to restore ----------------------------------

RESTORE_PATH = "/_local/state/restore"


def middleware(app: Callable[..., Iterable[bytes]], journal: Journal) -> Callable[..., Iterable[bytes]]:
    """Serve POST /_local/state/restore next to moto's own routes."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != RESTORE_PATH:
            return app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "POST":
            start_response("405 Method Not Allowed", [("Content-Type", "application/json")])
            return [b'{"error": "POST only"}']
        try:
            body = _dumps(journal.restore()).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
        except Exception as e:  # noqa: BLE001 - reported to the runtime, which stops with it
            body = _dumps({"error": f"{type(e).__name__}: {e}"}).encode()
            start_response("500 Internal Server Error", [("Content-Type", "application/json")])
        return [body]

    return wrapped
