"""What the pods' labels (metadata's ``kubernetes/client-label/KEY``) add to the pod store.

    python bench/client_labels.py [--workloads 1000] [--replicas 100] [--json out.json]

1,000 workloads of 100 pods each (100,000 pods in 200 namespaces), every pod with the five
labels a Deployment's pods typically carry: ``app``, ``app.kubernetes.io/name``,
``app.kubernetes.io/instance``, ``tier`` and the template's ``pod-template-hash``.  Each pod
is decoded from its own serialized form, as the API source hands pods to the index, so no
two pods share a string by accident.  tracemalloc gives what the kubernetes plugin's pod
store holds (``pods verified``) after ``Index.replace("Pod", ...)``:

* ``with labels``: the pods as they are;
* ``without labels``: the same pods with no labels (what the store holds when no pod
  has any, i.e. the address store alone);
* ``a dict per pod``: for comparison, each pod's label dict kept as decoded, the way a
  store that did not share label sets would hold them.

Run it against another checkout with ``PYTHONPATH=that/checkout`` to compare two versions.
"""

from __future__ import annotations

import argparse
import gc
import marshal
import os
import sys
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import finish, fmt, machine  # noqa: E402

MB = 1024 * 1024


def pods(workloads: int, replicas: int, with_labels: bool = True):
    """Raw pods, each decoded from its own bytes (slimmed as the API source slims them)."""
    for w in range(workloads):
        template_hash = f"{(w * 2654435761) & 0xFFFFFFFFFF:010x}"[:10]
        labels = {"app": f"app-{w}", "app.kubernetes.io/name": f"app-{w}",
                  "app.kubernetes.io/instance": f"app-{w}-prod", "tier": ("web", "api", "worker")[w % 3],
                  "pod-template-hash": template_hash} if with_labels else {}
        for r in range(replicas):
            i = w * replicas + r
            ip = f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"
            obj = {"metadata": {"name": f"app-{w}-{template_hash}-{r:05d}", "namespace": f"ns-{w % 200}",
                                "labels": labels},
                   "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
                   "spec": {"nodeName": f"node-{i % 1000}"}}
            yield marshal.loads(marshal.dumps(obj))


def store_bytes(workloads: int, replicas: int, with_labels: bool) -> tuple[int, object]:
    from pydns.plugins.kubernetes.index import Index

    gc.collect()
    index = Index(["cluster.local."], pods="verified")
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index.replace("Pod", pods(workloads, replicas, with_labels))
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used, index


def dict_per_pod_bytes(workloads: int, replicas: int) -> int:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = {(p["metadata"]["namespace"], p["metadata"]["name"]): p["metadata"]["labels"]
            for p in pods(workloads, replicas)}
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del kept
    return used


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", type=int, default=1000)
    ap.add_argument("--replicas", type=int, default=100)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    count = args.workloads * args.replicas
    with_labels, index = store_bytes(args.workloads, args.replicas, True)
    sets = len(getattr(index.store, "label_sets", ()))
    del index
    without, _ = store_bytes(args.workloads, args.replicas, False)
    naive = dict_per_pod_bytes(args.workloads, args.replicas)
    result = {"machine": machine(), "pods": count, "workloads": args.workloads,
              "store_with_labels_mb": with_labels / MB, "store_without_labels_mb": without / MB,
              "label_dicts_per_pod_mb": naive / MB, "label_sets": sets}
    line = (f"client labels: {count // 1000}k pods of {args.workloads} workloads, 5 labels each: pod store "
            f"{fmt(with_labels / MB)} MB with labels, {fmt(without / MB)} MB without "
            f"(+{fmt((with_labels - without) / MB)} MB, {sets} label sets kept); a label dict per pod "
            f"alone would be {fmt(naive / MB)} MB")
    finish(result, line, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
