"""Warm start: the kubernetes plugin's store, saved to a file and read back at start.

    keeper = Snapshot(path, interval, made_for)
    keeper.load(index)           # at start: True if the file was good and is now served
    await keeper.save(index)     # every interval once synced with the API, and at shutdown

The file is a magic line, a header line and a body::

    pydns-kubernetes-snapshot
    {"schema": 2, "made_for": {...}, "written": 1765000000.0, "length": N, "sha256": "..."}
    <N bytes: the store as JSON>

``made_for`` says what the store was built for: the API server's URL, the zones, the kinds
watched and every option that changes what the store keeps of an object (``labels``,
``namespace_labels``, ``pods``, ``endpoint_pod_names``, ``noendpoints``).  A file made for
anything else, of another schema, whose body does not match its length and checksum, that
does not parse into valid store entries, or that is larger than ``MAX_BYTES``, is logged and
ignored: the plugin then starts as it would without one.

It is written whole to a temporary file in the same folder, flushed to disk, renamed over
the old one, and the folder is flushed too, so a crash at any moment leaves either the old
file or the new one, never a mix.  Only a store that has been synced with the API is saved
(never one still made of a snapshot, or of some kinds listed and others not).  The store's
entries are copied on the event loop (they are immutable: a change replaces them); the
encoding and the writing happen in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
import time

from .objects import NO_PORTS, Pod, Service, Slice, canonical_ip
from .packing import label
from .podlabels import NO_LABELS

log = logging.getLogger("plugin/kubernetes")

MAGIC = b"pydns-kubernetes-snapshot\n"
SCHEMA = 2  # 2: services keep publishNotReadyAddresses, slices their not-ready count
MAX_BYTES = 256 * 1024 * 1024  # larger files are not read (nor written)
MAX_HEADER = 4096
DEFAULT_INTERVAL = 60.0
KIND_FIELDS = {"Namespace": "namespaces", "Service": "services", "EndpointSlice": "slices", "Pod": "pods"}


class SnapshotError(ValueError):
    """Why a snapshot file cannot be used."""


class Snapshot:
    def __init__(self, path: str, interval: float, made_for: dict):
        self.path = path
        self.interval = interval
        self.made_for = made_for
        self.saved_generation: tuple | None = None

    # ================================================================ reading
    def load(self, index) -> bool:
        """Replace the index's kinds with the snapshot's entries; False (logged) if there is none or it is bad."""
        try:
            entries, written = self.read()
        except FileNotFoundError:
            log.info("snapshot %s: no such file; starting without one", self.path)
            return False
        except (OSError, SnapshotError) as exc:
            log.warning("snapshot %s ignored: %s", self.path, exc)
            return False
        for kind, kind_entries in entries.items():
            index.replace_reduced(kind, kind_entries)
        count = sum(len(e) for e in entries.values())
        log.info("serving %d objects from snapshot %s, written %.0f s ago, until the API is synced", count,
                 self.path, max(0.0, time.time() - written))
        return True

    def read(self) -> tuple[dict[str, list], float]:
        """The snapshot's entries by kind (as ``Index.reduce`` makes them) and when it was written."""
        with open(self.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_BYTES:
                raise SnapshotError(f"{size} bytes is larger than the {MAX_BYTES} bytes a snapshot may have")
            if fh.readline(len(MAGIC)) != MAGIC:
                raise SnapshotError("not a pydns snapshot")
            line = fh.readline(MAX_HEADER)
            if not line.endswith(b"\n"):
                raise SnapshotError("truncated or unreadable header")
            try:
                header = json.loads(line)
            except ValueError:
                raise SnapshotError("unreadable header") from None
            if not isinstance(header, dict):
                raise SnapshotError("unreadable header")
            if header.get("schema") != SCHEMA:
                raise SnapshotError(f"schema {header.get('schema')!r}, this version reads schema {SCHEMA}")
            if header.get("made_for") != self.made_for:
                raise SnapshotError(f"made for {_differences(header.get('made_for'), self.made_for)}")
            body = fh.read(MAX_BYTES)
        if len(body) != header.get("length"):
            raise SnapshotError(f"truncated: {len(body)} bytes of {header.get('length')!r}")
        if hashlib.sha256(body).hexdigest() != header.get("sha256"):
            raise SnapshotError("checksum mismatch (corrupt)")
        try:
            return decode(json.loads(body), self.made_for["kinds"]), float(header.get("written") or 0)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SnapshotError(f"invalid contents: {exc}") from None

    # ================================================================ writing
    async def save(self, index) -> None:
        """Write the index's store, unless nothing changed since the last write."""
        generation = (index.generation, index.store.quiet_changes)
        if self.saved_generation == generation:
            return
        state = capture(index.store, self.made_for["kinds"])
        try:
            size = await asyncio.to_thread(self.write, state)
        except (OSError, SnapshotError) as exc:
            log.warning("snapshot %s not written: %s", self.path, exc)
            return
        self.saved_generation = generation
        log.debug("snapshot %s written: %d bytes", self.path, size)

    def write(self, state: dict) -> int:
        body = json.dumps(encode(state), separators=(",", ":")).encode()
        header = {"schema": SCHEMA, "made_for": self.made_for, "written": time.time(), "length": len(body),
                  "sha256": hashlib.sha256(body).hexdigest()}
        data = MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + body
        if len(data) > MAX_BYTES:
            raise SnapshotError(f"{len(data)} bytes is larger than the {MAX_BYTES} bytes a snapshot may have")
        folder = os.path.dirname(os.path.abspath(self.path))
        # A name of its own: a periodic write may still be under way when shutdown writes.
        fd, temp = tempfile.mkstemp(prefix=os.path.basename(self.path) + ".", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, self.path)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return len(data)


# ==================================================================== the store <-> JSON
def capture(store, kinds) -> dict:
    """Copies of the store's containers (fast, on the loop); the entries themselves are immutable."""
    return {"Namespace": list(store.namespaces) if "Namespace" in kinds else [],
            "Service": list(store.services.values()) if "Service" in kinds else [],
            "EndpointSlice": list(store.slices.items()) if "EndpointSlice" in kinds else [],
            "Pod": list(store.pods.items()) if "Pod" in kinds else []}


def encode(state: dict) -> dict:
    return {
        "namespaces": sorted(state["Namespace"]),
        "services": [[s.ns, s.name, s.kind, list(s.ips), [list(p) for p in s.ports], s.target, s.publish_not_ready]
                     for s in state["Service"]],
        "slices": [[key[0], key[1], sl.service, [list(p) for p in sl.ports], list(sl.ips),
                    [None if n is None else n[1:].decode("latin-1") for n in sl.names], sl.not_ready]
                   for key, sl in state["EndpointSlice"]],
        # Not the pods' labels: metadata reads them only once the pods are synced with the API.
        "pods": [[key[0], key[1], pod.address] for key, pod in state["Pod"]],
    }


def decode(body: dict, kinds) -> dict[str, list]:
    """Entries for ``Index.replace_reduced`` by kind; ValueError/TypeError on anything out of shape."""
    out: dict[str, list] = {}
    for kind in kinds:
        rows = body[KIND_FIELDS[kind]]
        if not isinstance(rows, list):
            raise ValueError(f"{KIND_FIELDS[kind]} is not a list")
        out[kind] = [_DECODERS[kind](row) for row in rows]
    return out


def _text(value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    return value


def _address(value) -> str:
    if canonical_ip(value) != value:
        raise ValueError(f"{value!r} is not an address in canonical form")
    return value


def _ports(rows) -> tuple:
    ports = tuple((_text(name), _text(proto), int(port)) for name, proto, port in rows)
    return ports or NO_PORTS


def _namespace(row) -> tuple:
    return _text(row), True, None


def _service(row) -> tuple:
    ns, name, kind, ips, ports, target, publish_not_ready = row
    if kind not in (0, 1, 2):
        raise ValueError(f"service kind {kind!r}")
    if not isinstance(publish_not_ready, bool):
        raise TypeError(f"publishNotReadyAddresses {publish_not_ready!r}")
    svc = Service(_text(ns), _text(name), kind, tuple(_address(ip) for ip in ips), _ports(ports), _text(target),
                  publish_not_ready=publish_not_ready)
    return (svc.ns, svc.name), svc, None


def _slice(row) -> tuple:
    ns, name, service, ports, ips, names, not_ready = row
    if len(ips) != len(names):
        raise ValueError(f"slice {ns}/{name}: {len(ips)} addresses but {len(names)} names")
    if type(not_ready) is not int or not_ready < 0:
        raise ValueError(f"slice {ns}/{name}: not-ready count {not_ready!r}")
    wire = tuple(None if n is None else label(_text(n), remember=False) for n in names)
    sl = Slice(_text(ns), _text(service), _ports(ports), tuple(_address(ip) for ip in ips), wire,
               not_ready=not_ready)
    return (sl.ns, _text(name)), sl, None


def _pod(row) -> tuple:
    ns, name, ip = row
    return (_text(ns), _text(name)), Pod(_address(ip), NO_LABELS), None


_DECODERS = {"Namespace": _namespace, "Service": _service, "EndpointSlice": _slice, "Pod": _pod}


def _differences(theirs, ours: dict) -> str:
    """What a foreign snapshot was made for, where it differs from what this server needs."""
    if not isinstance(theirs, dict):
        return "something unknown"
    return ", ".join(f"{k}={theirs.get(k)!r} (here {ours[k]!r})" for k in ours if theirs.get(k) != ours[k]) or \
        "something else"
