"""Reading the API server's answers as they arrive, and keeping only what DNS needs of them.

    for line in watch_lines(response): event = json.loads(line)
    body = ListBody(response)
    for item in body.items(): ...      # one object at a time
    body.finish(); body.fields["metadata"]["resourceVersion"]
    kept = slim("EndpointSlice", item)
    state = Packed(); state.append(kept); index.replace(kind, state)

A sync holds a whole cluster's objects at once until it hands them to the index, and a list
at ``resourceVersion=0`` is one page whatever the cluster's size (the watch cache does not
page): so a list's items are parsed one by one from the stream, never the whole body at
once; each object is slimmed as it comes and kept serialized in one buffer (``Packed``)
until the index reads it.  Held as dicts, the objects of 10,000 services and
their slices are some 80 MB of small allocations that interleave with the index's own, so
Python's allocator could not give that memory back once they are gone.
"""

from __future__ import annotations

import codecs
import json
import marshal
from array import array
from collections.abc import Sequence

from .objects import NOT_READY_COUNT, address_count, endpoint_ready

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_HEAVY_METADATA = ("managedFields", "ownerReferences", "finalizers")
_POD_STATUS = ("phase", "podIP", "podIPs")
_POD_SPEC = ("hostname", "subdomain", "hostNetwork", "nodeName")
_DECODER = json.JSONDecoder()
_CHUNK = 65536


def slim(kind: str, obj: dict) -> dict:
    """The parts of an object the index can use (most of a raw endpoint or pod is of no use to DNS)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for heavy in _HEAVY_METADATA:
            meta.pop(heavy, None)
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(LAST_APPLIED, None)
    if kind in ("EndpointSlice", "MultiClusterEndpointSlice"):
        # Endpoints that are not served are only counted (``pydns explain`` tells how many).
        endpoints = [ep for ep in obj.get("endpoints") or () if isinstance(ep, dict)]
        return {"metadata": meta, "addressType": obj.get("addressType"), "ports": obj.get("ports"),
                "endpoints": [_slim_endpoint(ep) for ep in endpoints if endpoint_ready(ep)],
                NOT_READY_COUNT: sum(address_count(ep) for ep in endpoints if not endpoint_ready(ep))}
    if kind == "Pod":
        status, spec = obj.get("status"), obj.get("spec")
        return {"metadata": meta,
                "status": {k: status[k] for k in _POD_STATUS if k in status} if isinstance(status, dict) else {},
                "spec": {k: spec[k] for k in _POD_SPEC if k in spec} if isinstance(spec, dict) else {}}
    return obj


def _slim_endpoint(endpoint: dict) -> dict:
    kept = {"addresses": endpoint.get("addresses")}
    if endpoint.get("hostname"):
        kept["hostname"] = endpoint["hostname"]
    if endpoint.get("zone"):
        kept["zone"] = endpoint["zone"]  # zonal
    ref = endpoint.get("targetRef")
    if isinstance(ref, dict) and ref.get("name"):
        kept["targetRef"] = {"name": ref["name"]}  # endpoint_pod_names
    return kept


class Packed(Sequence):
    """Objects kept serialized in one buffer; each read (index or iteration) rebuilds one anew.

    ``marshal``: the fastest of the standard library's serializers for plain dicts, lists and
    strings; the bytes never leave this process, so its version-specific format is no matter."""

    def __init__(self):
        self._data = bytearray()
        self._ends = array("Q")

    def append(self, obj: dict) -> None:
        self._data += marshal.dumps(obj)
        self._ends.append(len(self._data))

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = self._ends[i - 1] if i else 0
        return marshal.loads(self._data[start:self._ends[i]])


def watch_lines(response):
    """The JSON lines of a watch as they arrive."""
    buffer = b""
    for chunk in _raw_chunks(response):
        buffer += chunk
        if b"\n" not in chunk:
            continue  # an event split across chunks
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield line


def _raw_chunks(response):
    """A streaming response's bytes as they arrive (whatever has come, not a full buffer)."""
    if response.chunked:
        return response.stream(None, decode_content=False)
    return iter(lambda: response.read1(_CHUNK), b"")


class ListBody:
    """A list response (``{"kind": ..., "metadata": {...}, "items": [...]}``) read item by item.

    ``items()`` yields each item once it has arrived in full; every other member of the
    object ends up in ``fields``.  Malformed JSON raises ``ValueError``.
    """

    def __init__(self, response):
        self._chunks = response.stream(_CHUNK)
        self._decode = codecs.getincrementaldecoder("utf-8")().decode
        self._buf = ""
        self._pos = 0
        self._eof = False
        self.fields: dict = {}

    def items(self):
        self._expect("{")
        while True:
            ch = self._peek()
            if ch == "}":
                self._pos += 1
                return
            if ch == ",":
                self._pos += 1
                continue
            key = self._value()
            self._expect(":")
            if key == "items" and self._peek() == "[":
                self._pos += 1
                yield from self._array()
            else:
                self.fields[key] = self._value()

    def finish(self) -> None:
        """Read to the end of the body (so the connection can be reused); only spaces may follow."""
        while self._more():
            pass
        if self._buf[self._pos:].strip():
            raise ValueError("unexpected data after the list")

    def _array(self):
        while True:
            ch = self._peek()
            if ch == "]":
                self._pos += 1
                return
            if ch == ",":
                self._pos += 1
                continue
            yield self._value()

    def _more(self) -> bool:
        """Append the next chunk to the buffer (dropping what was consumed); False at the end."""
        if self._eof:
            return False
        chunk = next(self._chunks, None)
        rest = self._buf[self._pos:]
        self._pos = 0
        if chunk is None:
            self._eof = True
            self._buf = rest + self._decode(b"", final=True)
            return False
        self._buf = rest + self._decode(chunk)
        return True

    def _peek(self) -> str:
        """The next character that is not white space (not consumed)."""
        while True:
            buf, pos = self._buf, self._pos
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            self._pos = pos
            if pos < len(buf):
                return buf[pos]
            if not self._more():
                raise ValueError("the list ended early")

    def _expect(self, ch: str) -> None:
        if self._peek() != ch:
            raise ValueError(f"expected {ch!r} in the list at {self._buf[self._pos:self._pos + 20]!r}")
        self._pos += 1

    def _value(self):
        """The next JSON value, once it has arrived in full.

        A value is taken only when something follows it (or the body ended): a number at
        the end of the buffer might go on in the next chunk."""
        self._peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError:
                if not self._more():
                    raise
                continue
            if end < len(self._buf) or self._eof:
                self._pos = end
                return value
            self._more()
