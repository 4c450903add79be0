"""The labels of the pods watched (``pods verified``), for metadata's ``kubernetes/client-label/<key>``.

    labels = read_labels({"app": "web", "pod-template-hash": "5d8f7c9b6"})
    # (("app", "web"), ("pod-template-hash", "5d8f7c9b6")): a label set
    sets = LabelSets()
    held = sets.hold(labels)        # the one copy of that set, now held by one more pod
    sets.release(held)              # a pod no longer has it; the last release lets it go

The pods of one workload carry the same labels: those of its pod template, with the
template's hash.  So a label set is kept once, however many pods have it, as a tuple of
(key, value) pairs sorted by key: immutable (a pod whose labels change is given another
set, and the sets it shared are untouched) and hashable (the table of sets in use is a
dict).  Each pod holds a reference; a set no pod holds any more (an earlier rollout's hash)
is dropped, so the table never grows past the distinct sets in use, at most one per pod.
Keys and values are interned: ``app`` or ``app.kubernetes.io/name`` is one string for
every set that has it.
"""

from __future__ import annotations

import sys

NO_LABELS: tuple = ()


def read_labels(raw) -> tuple:
    """A pod's ``metadata.labels`` as a label set; pairs that are not text are left out (the
    API server would refuse them; a manifest may hold ``version: 2``)."""
    if not isinstance(raw, dict) or not raw:
        return NO_LABELS
    return tuple(sorted((k, v) for k, v in raw.items() if type(k) is str and type(v) is str))


class LabelSets:
    """The distinct label sets in use, each once, with the number of pods that hold it."""

    __slots__ = ("_held",)

    def __init__(self):
        self._held: dict[tuple, list] = {}  # label set -> [its one copy, pods holding it]

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, labels: tuple) -> tuple:
        """The one copy of ``labels``, held by one more pod."""
        if not labels:
            return NO_LABELS
        entry = self._held.get(labels)
        if entry is None:
            labels = tuple((sys.intern(k), sys.intern(v)) for k, v in labels)
            entry = self._held[labels] = [labels, 0]
        entry[1] += 1
        return entry[0]

    def release(self, labels: tuple) -> None:
        """A pod that held ``labels`` (as ``hold`` gave them) no longer does."""
        if not labels:
            return
        entry = self._held[labels]
        entry[1] -= 1
        if not entry[1]:
            del self._held[labels]
