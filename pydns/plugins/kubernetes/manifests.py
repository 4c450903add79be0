"""The kubernetes plugin's file source: a cluster described by YAML or JSON manifests.

    manifests PATH...        (in the kubernetes block, instead of endpoint/kubeconfig)

Each PATH is a file or a folder (its ``*.yaml``, ``*.yml`` and ``*.json`` files, not
recursing, hidden files skipped); a relative PATH is taken from the Corefile's folder.  A
file holds one or more documents (``---``), a ``kind: List`` or a plain list; Namespaces,
Services, EndpointSlices, Endpoints and Pods are used, other kinds ignored.  Objects without
a namespace are in ``default``, and a namespace that objects use but no Namespace declares
exists anyway, as in a real cluster.
A Service without an EndpointSlice gets one derived from its ``Endpoints`` or, having a
selector, from its Pods (see ``derive.py``).

YAML is read with PyYAML's C loader when it is available, still about 1 MB a second; a
large cluster (tens of thousands of objects) loads more than ten times faster from JSON.
Files are checked every half second; a changed, new or removed file is re-read and only the
objects that changed reach the index (as upserts and deletes), so edits are served within
two seconds.  A file that cannot be read or parsed is logged (file and problem) and
its last good objects stay.  ``rescan()`` applies changes at once; ``apply_objects()``,
``delete_objects()`` and ``set_objects()`` add an in-memory layer of objects on top of the
files (tests and fixtures drive a cluster that way).  These three and ``rescan()`` may be
called from any thread; they return once the index holds the change.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import threading

import yaml

from . import derive
from .objects import SERVICE_NAME_LABEL, key_of, meta_of

log = logging.getLogger("plugin/kubernetes")

USED_KINDS = ("Namespace", "Service", "EndpointSlice", "Endpoints", "Pod")
INDEX_ORDER = ("Namespace", "Service", "EndpointSlice", "Pod")
SUFFIXES = (".yaml", ".yml", ".json")
POLL_INTERVAL = 0.5
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestError(Exception):
    """A manifest file that cannot be used."""


def read_file(path: str) -> list[dict]:
    """The objects of the used kinds in one file; ManifestError says what is wrong with it."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ManifestError(exc.strerror or str(exc)) from None
    try:
        if path.endswith(".json"):
            docs = [json.loads(data)]
        else:
            docs = list(yaml.load_all(data, Loader=_Loader))
    except (ValueError, yaml.YAMLError) as exc:
        raise ManifestError(" ".join(str(exc).split())) from None
    objects: list[dict] = []
    for n, doc in enumerate(docs, 1):
        _collect(doc, objects, f"document {n}")
    return objects


def _collect(doc, out: list[dict], where: str) -> None:
    if doc is None:
        return
    if isinstance(doc, list):
        for i, item in enumerate(doc):
            _collect(item, out, f"{where}, item {i + 1}")
        return
    if not isinstance(doc, dict):
        raise ManifestError(f"{where}: expected a Kubernetes object, found {type(doc).__name__}")
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
        # The API's own lists (ServiceList...) leave the kind out of their items.
        item_kind = kind[: -len("List")]
        for i, item in enumerate(doc["items"]):
            if item_kind and isinstance(item, dict) and "kind" not in item:
                item = {**item, "kind": item_kind}
            _collect(item, out, f"{where}, item {i + 1}")
        return
    if not isinstance(kind, str):
        raise ManifestError(f"{where}: no 'kind'")
    if kind not in USED_KINDS:
        return
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise ManifestError(f"{where}: {kind} without metadata.name")
    if kind != "Namespace" and not meta.get("namespace"):
        doc = {**doc, "metadata": {**meta, "namespace": "default"}}
    if kind == "Service":
        spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
        if spec.get("type") != "ExternalName" and not (spec.get("clusterIP") or spec.get("clusterIPs")):
            # In a cluster the API server picks one; a manifest has to say it.
            log.warning("manifests: %s: Service %s has no clusterIP, so its name has no address "
                        "(write clusterIP: None for a headless service)", where, meta["name"])
    out.append(doc)


def _identity(obj: dict) -> tuple[str, str, str]:
    kind = obj["kind"]
    if kind == "Namespace":
        return kind, "", meta_of(obj)["name"]
    return (kind, *key_of(obj))


def desired_state(objects: list[dict], overrides=()) -> dict[tuple[str, str, str], dict]:
    """The cluster the objects describe: identity -> object, derived EndpointSlices included.

    ``overrides`` (the in-memory layer) replace file objects of the same identity.
    """
    state: dict[tuple[str, str, str], dict] = {}
    for obj in objects:
        ident = _identity(obj)
        if ident in state:
            log.warning("manifests: %s %s/%s is defined more than once; the last one is used", *ident)
        state[ident] = obj
    for obj in overrides:
        state[_identity(obj)] = obj
    for kind, ns, _name in list(state):
        if kind != "Namespace" and ("Namespace", "", ns) not in state:
            state[("Namespace", "", ns)] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    with_slices = {(ns, str((meta_of(o).get("labels") or {}).get(SERVICE_NAME_LABEL) or ""))
                   for (kind, ns, _n), o in state.items() if kind == "EndpointSlice"}
    pods_in: dict[str, list[dict]] = {}
    for (kind, ns, _n), obj in state.items():
        if kind == "Pod":
            pods_in.setdefault(ns, []).append(obj)
    derived: list[dict] = []
    for (kind, ns, name), svc in state.items():
        if kind != "Service" or (ns, name) in with_slices or (svc.get("spec") or {}).get("type") == "ExternalName":
            continue
        endpoints = state.get(("Endpoints", ns, name))
        if endpoints is not None:
            derived.extend(derive.from_endpoints(svc, endpoints))
        else:
            derived.extend(derive.from_pods(svc, pods_in.get(ns, [])))
    for obj in derived:
        state.setdefault(_identity(obj), obj)
    return state


class _File:
    __slots__ = ("stamp", "objects")

    def __init__(self, stamp, objects):
        self.stamp, self.objects = stamp, objects


class ManifestSource:
    def __init__(self, index, paths: list[str], kinds=("Namespace", "Service", "EndpointSlice"),
                 poll_interval: float = POLL_INTERVAL):
        self.index = index
        self.paths = list(paths)
        self.kinds = tuple(kinds)
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._memory: dict[tuple[str, str, str], dict] = {}
        self._memory_changed = False
        self._seq = 0  # states are numbered as they are read; an older one never overwrites a newer
        self._pending: tuple[int, dict] | None = None
        self._applied_seq = 0
        self._complaints: dict[str, str] = {}
        self._applied: dict[tuple[str, str, str], dict] = {}
        self._synced = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    # ---------------------------------------------------------------- the source interface
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.ensure_future(self._run())

    def synced(self) -> bool:
        return self._synced

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self._read, not self._synced)
                self._apply_pending()
            except Exception:
                log.exception("manifests: reading the files failed")
            await asyncio.sleep(self.poll_interval)

    # ---------------------------------------------------------------- driving it directly
    def rescan(self) -> None:
        """Read changed files and apply the result now."""
        self._read(False)
        self._apply_from_any_thread()

    def apply_objects(self, objects: list[dict]) -> None:
        """Add or replace objects (by kind, namespace and name) in the in-memory layer."""
        with self._lock:
            for obj in self._checked(objects):
                self._memory[_identity(obj)] = obj
            self._memory_changed = True
        self.rescan()

    def delete_objects(self, objects: list[dict]) -> None:
        """Remove objects (matched by kind, namespace and name) from the in-memory layer."""
        with self._lock:
            for obj in self._checked(objects):
                self._memory.pop(_identity(obj), None)
            self._memory_changed = True
        self.rescan()

    def set_objects(self, objects: list[dict]) -> None:
        """Replace the whole in-memory layer."""
        with self._lock:
            self._memory = {_identity(o): o for o in self._checked(objects)}
            self._memory_changed = True
        self.rescan()

    @staticmethod
    def _checked(objects: list[dict]) -> list[dict]:
        out: list[dict] = []
        _collect(copy.deepcopy(list(objects)), out, "object")
        return out

    def _apply_from_any_thread(self) -> None:
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or not loop.is_running():
            self._apply_pending()
            return

        async def apply() -> None:
            self._apply_pending()

        asyncio.run_coroutine_threadsafe(apply(), loop).result(30)

    # ---------------------------------------------------------------- reading
    def _files_now(self) -> list[str]:
        found: list[str] = []
        for path in self.paths:
            if os.path.isdir(path):
                try:
                    entries = sorted(os.listdir(path))
                except OSError as exc:
                    log.error("manifests: %s: %s", path, exc.strerror or exc)
                    found.extend(p for p in self._files if os.path.dirname(p) == path)
                    continue
                found.extend(os.path.join(path, e) for e in entries if e.endswith(SUFFIXES)
                             and not e.startswith(".") and os.path.isfile(os.path.join(path, e)))
            else:
                found.append(path)
        return list(dict.fromkeys(found))

    def _complain(self, path: str, problem: str) -> None:
        """Log a file's problem once (until it changes or goes away)."""
        if self._complaints.get(path) != problem:
            self._complaints[path] = problem
            log.error("manifests: %s: %s", path, problem)

    def _read(self, force: bool) -> None:
        """Re-read what changed; a new desired state (when something did, or ``force``) becomes pending."""
        with self._lock:
            changed = force or self._memory_changed
            current = self._files_now()
            listed = set(self.paths)
            for path in list(self._files):
                if path not in current:
                    del self._files[path]  # a file gone from a folder takes its objects along
                    changed = True
            for path in current:
                try:
                    st = os.stat(path)
                    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                except OSError as exc:
                    if path in listed:
                        keep = "; keeping its last good objects" if path in self._files else ""
                        self._complain(path, f"{exc.strerror or exc}{keep}")
                    continue
                known = self._files.get(path)
                if known is not None and known.stamp == stamp:
                    continue
                try:
                    objects = read_file(path)
                except ManifestError as exc:
                    if known is not None:
                        self._complain(path, f"{exc}; keeping its last good objects")
                        known.stamp = stamp
                    else:
                        self._complain(path, str(exc))
                        self._files[path] = _File(stamp, [])
                    continue
                if self._complaints.pop(path, None) is not None:
                    log.info("manifests: %s: read again without errors", path)
                self._files[path] = _File(stamp, objects)
                changed = True
            if not changed:
                return
            self._memory_changed = False
            objects = [o for path in current if path in self._files for o in self._files[path].objects]
            self._seq += 1
            self._pending = (self._seq, desired_state(objects, list(self._memory.values())))

    # ---------------------------------------------------------------- applying (on the loop's thread)
    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None or pending[0] <= self._applied_seq:
            return
        seq, state = pending
        self._applied_seq = seq
        wanted = {ident: obj for ident, obj in state.items() if ident[0] in self.kinds}
        index = self.index
        if not self._synced:
            for kind in INDEX_ORDER:
                if kind in self.kinds:
                    index.replace(kind, [o for ident, o in wanted.items() if ident[0] == kind])
            self._applied = wanted
            self._synced = True
            if state:
                log.info("manifests: %d objects from %d files", len(wanted), len(self._files))
            else:  # a mistyped path or an empty variable serves an empty cluster: say so
                log.warning("manifests: no objects in %s", ", ".join(self.paths))
            return
        old = self._applied
        for kind in INDEX_ORDER:
            for ident, obj in wanted.items():
                if ident[0] == kind:
                    before = old.get(ident)
                    if before is None or (before is not obj and before != obj):
                        index.upsert(kind, obj)
        for kind in reversed(INDEX_ORDER):
            for ident, obj in old.items():
                if ident[0] == kind and ident not in wanted:
                    index.delete(kind, obj)
        self._applied = wanted
