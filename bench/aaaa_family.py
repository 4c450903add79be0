"""What ``ipv6 off`` saves on a single-stack IPv4 cluster: the questions of a pod's lookups.

    python bench/aaaa_family.py [--json PATH]

A pod's resolver is played as glibc's stub does it with Kubernetes's resolv.conf
(``search shop.svc.cluster.local svc.cluster.local cluster.local``, ``options ndots:5``):
a name with fewer than 5 dots is tried under each search domain first, then as it is; A and
AAAA are asked for each candidate, and the next candidate is tried while both come back
NXDOMAIN or without records.  It looks up external names (``api.example.com``,
``cdn.example.org``), an ExternalName service (``db`` -> ``db.example.net``) and cluster
services (``web``, ``web.shop``).

For each Corefile (the kubernetes block as kubeadm writes it, and with ``fallthrough``, as
setups that hand unknown cluster names on use it) and each ``ipv6`` setting, counted: the
questions pydns gets, and the questions it forwards to the upstream.  Counts, not times:
the figures do not depend on the machine.  Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import finish, log, search_order  # noqa: E402

from pydns.testing import ServerThread  # noqa: E402
from pydns.testing.upstream import Upstream  # noqa: E402

SEARCH = ("shop.svc.cluster.local", "svc.cluster.local", "cluster.local")
NAMES = ("api.example.com", "cdn.example.org", "db", "web", "web.shop")
CLUSTER = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {type: ClusterIP, clusterIP: 10.0.0.10, clusterIPs: [10.0.0.10], ipFamilies: [IPv4],
       ports: [{name: http, port: 80, protocol: TCP}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {type: ExternalName, externalName: db.example.net}
"""
UPSTREAM = {(name, rtype): [value] for name in ("api.example.com.", "cdn.example.org.", "db.example.net.")
            for rtype, value in (("A", "192.0.2.1"), ("AAAA", "2001:db8::1"))}


def look_up(srv: ServerThread, name: str) -> int:
    """Resolve ``name`` as the stub does; the number of questions it asked."""
    asked = 0
    for candidate in search_order(name, SEARCH):
        found = False
        for rtype in ("A", "AAAA"):
            msg = srv.query(candidate, rtype)
            asked += 1
            found = found or any(rrset.rdtype in (1, 28) for rrset in msg.answer)
        if found:
            break
    return asked


def measure(folder: str, up: Upstream, fallthrough: bool, mode: str) -> dict:
    options = ("   fallthrough\n" if fallthrough else "") + f"   ipv6 {mode}\n"
    corefile = (f".:0 {{\n bind 127.0.0.1\n kubernetes cluster.local in-addr.arpa ip6.arpa {{\n"
                f"   manifests {folder}/cluster.yaml\n{options} }}\n"
                f" forward . {up.address[0]}:{up.address[1]}\n}}\n")
    with ServerThread(corefile) as srv:
        up.reset()
        asked = sum(look_up(srv, name) for name in NAMES)
        forwarded = [q for q in up.queries if q[1] != "NS"]
    return {"fallthrough": fallthrough, "ipv6": mode, "questions": asked, "forwarded": len(forwarded),
            "forwarded_aaaa": sum(1 for q in forwarded if q[1] == "AAAA")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="aaaa-family-") as folder, Upstream(UPSTREAM) as up:
        with open(os.path.join(folder, "cluster.yaml"), "w") as fh:
            fh.write(CLUSTER)
        for fallthrough in (False, True):
            for mode in ("on", "off"):
                rows.append(measure(folder, up, fallthrough, mode))
                log(f"fallthrough={fallthrough!s:5} ipv6 {mode:3}: {rows[-1]['questions']} questions, "
                    f"{rows[-1]['forwarded']} forwarded ({rows[-1]['forwarded_aaaa']} AAAA)")
    plain_on, plain_off, fall_on, fall_off = rows
    line = (f"aaaa_family: {len(NAMES)} lookups, {plain_on['questions']} questions to pydns whatever the setting; "
            f"forwarded upstream: {plain_on['forwarded']} (ipv6 on) vs {plain_off['forwarded']} (off), "
            f"with fallthrough {fall_on['forwarded']} vs {fall_off['forwarded']}")
    finish({"names": list(NAMES), "rows": rows}, line, args.json)


if __name__ == "__main__":
    main()
