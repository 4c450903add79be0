"""Zone-scoped names of headless services (the ``zonal`` option), as CoreDNS 1.14.7 defines them::

    TOPOLOGY-ZONE.pin._zone.svc.ns.svc.ZONE      the endpoints in that zone only (none: NODATA)
    TOPOLOGY-ZONE.prefer._zone.svc.ns.svc.ZONE   the endpoints in that zone, else all of them

The topology zone is every label left of the directive, joined with dots (zone values may
hold dots), matched without regard to case against each endpoint's ``zone`` field in its
EndpointSlice; endpoints without one match no zone.  The names answer A/AAAA and SRV (SRV
targets are the endpoints' own names), NODATA for other types; services that are not
headless, unknown directives and anything under a multi-cluster zone are NXDOMAIN.
"""

from __future__ import annotations

from itertools import repeat

from .memo import Name
from .objects import HEADLESS
from .store import namespace_dep, service_dep

ANCHOR = b"_zone"
PIN, PREFER = b"pin", b"prefer"
NOT_FOUND = (None, ())


def render(renderer, key: bytes, zone, labels: list[bytes]) -> tuple[Name | None, tuple]:
    """``labels`` before the zone: TOPOLOGY-ZONE labels..., directive, ``_zone``, svc, ns, ``svc``."""
    directive = labels[-5]
    if directive not in (PIN, PREFER):
        return NOT_FOUND
    skey = (labels[-2].decode("latin-1"), labels[-3].decode("latin-1"))
    svc = renderer.store.services.get(skey)
    if svc is None or svc.base is None or not renderer.exposed(skey[0]):
        return NOT_FOUND
    if svc.kind != HEADLESS:
        return NOT_FOUND
    slices = renderer.store.slices_of(skey)
    topology = b".".join(labels[:-5]).decode("latin-1")
    entries = _entries(svc, slices, topology)
    if not entries and directive == PREFER:
        entries = _entries(svc, slices, None)
    # The name exists whatever the zone holds: an empty answer is NODATA, on every replica alike.
    # The renderer packs them as it packs any service's (same package: its helper is shared).
    answers = renderer._entry_answers(key, zone, entries) if entries else {}
    return Name(answers), (service_dep(*skey), namespace_dep(skey[0]))


def _entries(svc, slices, topology: str | None) -> tuple:
    out = []
    for sl in slices:
        for (ip, host), where in zip(sl.endpoints, sl.zones or repeat(None)):
            if topology is not None and where != topology:
                continue
            out.extend((ip, port, host + svc.base) for _n, _p, port in sl.ports)
    return tuple(out)
