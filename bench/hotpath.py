"""Where pydns spends its time per query: a sampling profile of the server under dnsperf load.

    python bench/hotpath.py [--server pydns] [--kind mix] [--seconds 6]

pydns serves the generated cluster (the same servers as throughput.py: pydns, pydns-kubeadm,
pydns-cache), pinned to core 0, while dnsperf sends the chosen query kind from core 1.  With
py-spy (``pip install py-spy``) the running process is sampled from outside, which does not
slow it down; without it, the server runs under cProfile instead (deterministic, but the
profiler's own cost inflates small functions).  The report lists the source lines and the
functions with the most samples of their own (time in a C call such as ``sendto`` counts for
the Python line that makes it) and the share of samples inside each main step.
"""

from __future__ import annotations

import argparse
import collections
import json
import linecache
import os
import pstats
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_cluster  # noqa: E402
import throughput  # noqa: E402
from common import (ROOT, SERVER_CORE, answers_correctly, dnsperf, finish, log, machine, pin_self,  # noqa: E402
                    pinned, pydns_env, pydns_plugins, scratch_dir, Server, wait_until)

# steps of a query, recognised by the innermost frame of a sample that belongs to one
STEPS = {
    "Request.__init__": "parse (Request)", "Request._parse": "parse (Request)",
    "dispatch": "route + plugin chain", "Router.route": "route + plugin chain",
    "Answer.render": "render (Answer.render)", "Request.render": "render (Answer.render)",
    "UDPListener._send": "send (sendto)",
    "EpollSelector.select": "event loop (epoll, handles)", "BaseEventLoop._run_once": "event loop (epoll, handles)",
}
# what the UDP listener's own lines do (C calls are charged to the line making them)
LISTENER_LINES = (("recv(", "receive (recvfrom)"), ("kept.get(", "kept replies (lookup)"), ("send(", "send (sendto)"),
                  ("Request(", "parse (Request)"), ("dispatch(", "route + plugin chain"),
                  ("render(", "render (Answer.render)"))
LISTENER_FUNCS = ("UDPListener._answer", "UDPListener._readable")


def _step(func: str, file: str, line: int) -> str | None:
    if func in LISTENER_FUNCS:
        text = _source(file, line)
        return next((step for key, step in LISTENER_LINES if key in text), "UDP listener loop")
    if func in STEPS:
        return STEPS[func]
    if "/plugins/" in file:
        return "route + plugin chain"
    return None


_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^:()]+):(?P<line>\d+)\)$")


def read_raw(path: str) -> list[tuple[list[tuple[str, str, int]], int]]:
    stacks = []
    with open(path) as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line:
                continue
            frames_text, _, count = line.rpartition(" ")
            frames = []
            for f in frames_text.split(";"):
                m = _FRAME.match(f)
                frames.append((m["func"], m["file"], int(m["line"])) if m else (f, "", 0))
            stacks.append((frames, int(count)))
    return stacks


def _source(file: str, line: int) -> str:
    for base in (ROOT, *sys.path):
        path = os.path.join(base, file)
        if os.path.exists(path):
            return linecache.getline(path, line).strip()
    return ""


def analyse_raw(stacks, top: int) -> dict:
    total = sum(c for _, c in stacks) or 1
    by_line: collections.Counter = collections.Counter()
    by_func: collections.Counter = collections.Counter()
    steps: collections.Counter = collections.Counter()
    # A generator expression's samples can come without its callers (3.11 does not link the
    # frames); they go to the step its enclosing function is most often seen in.
    usual: dict[str, collections.Counter] = {}
    for frames, count in stacks:
        step = next((st for st in (_step(*f) for f in reversed(frames)) if st), None)
        if step and len(frames) > 1:
            for func, _file, _line in frames:
                usual.setdefault(func, collections.Counter())[step] += count
    for frames, count in stacks:
        func, file, line = frames[-1]
        by_line[(file, line, func)] += count
        by_func[(func, file)] += count
        # a sample belongs to the innermost step it is in
        step = next((st for st in (_step(*f) for f in reversed(frames)) if st), None)
        if step is None and len(frames) == 1 and ".<locals>." in func:
            seen = usual.get(func.split(".<locals>.")[0])
            step = seen.most_common(1)[0][0] if seen else None
        steps[step or "other"] += count
    return {
        "samples": total,
        "lines": [{"file": f, "line": ln, "function": fn, "share": c / total, "source": _source(f, ln)}
                  for (f, ln, fn), c in by_line.most_common(top)],
        "functions": [{"function": fn, "file": f, "share": c / total} for (fn, f), c in by_func.most_common(top)],
        "steps": {k: v / total for k, v in steps.most_common()},
    }


def analyse_cprofile(path: str, top: int) -> dict:
    stats = pstats.Stats(path)
    rows = []
    # cProfile counts wall time: the loop's wait for events is idleness, not cost
    idle = {k for k in stats.stats if "'poll' of 'select.epoll'" in k[2]}
    total = sum(v[2] for k, v in stats.stats.items() if k not in idle) or 1.0  # tottime of everything
    for (file, line, func), (cc, nc, tt, ct, callers) in stats.stats.items():
        if (file, line, func) in idle:
            continue
        rows.append({"function": func, "file": os.path.relpath(file, ROOT) if file.startswith(ROOT) else file,
                     "line": line, "calls": nc, "share": tt / total, "inclusive": ct / total})
    rows.sort(key=lambda r: r["share"], reverse=True)
    return {"samples": None, "functions": rows[:top], "lines": [], "steps": {}}


# pydns under cProfile: everything runs in the main thread, on the one event loop.
CPROFILE_RUNNER = """
import cProfile, sys
from pydns.cli import main
profile = cProfile.Profile()
try:
    profile.runcall(main, sys.argv[1:])
finally:
    profile.dump_stats(PATH)
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    gen_cluster.add_cluster_options(p)
    p.add_argument("--server", default="pydns", choices=("pydns", "pydns-kubeadm", "pydns-cache"))
    p.add_argument("--kind", default="mix", help="query kind (default %(default)s; ext for pydns-cache)")
    p.add_argument("--seconds", type=float, default=6.0, help="how long to sample (default %(default)s)")
    p.add_argument("--qps", type=int, default=0, help="offered load; 0 for as fast as dnsperf goes (default)")
    p.add_argument("--tool", default="auto", choices=("auto", "py-spy", "cprofile"))
    p.add_argument("--rate", type=int, default=1000, help="py-spy samples per second (default %(default)s)")
    p.add_argument("--top", type=int, default=15, help="lines and functions to list (default %(default)s)")
    p.add_argument("--queries", type=int, default=10000)
    p.add_argument("--workdir", help="keep the generated files, logs and raw profile here")
    p.add_argument("--json", metavar="PATH", help="write the profile as JSON")
    args = p.parse_args(argv)
    if shutil.which("dnsperf") is None:
        sys.exit("missing dnsperf: install it with: apt-get install -y dnsperf dnsmasq-base")
    tool = args.tool
    if tool == "auto":
        tool = "py-spy" if shutil.which("py-spy") else "cprofile"
    if tool == "py-spy" and shutil.which("py-spy") is None:
        sys.exit("py-spy is not installed: pip install py-spy")
    kind = "ext" if args.server == "pydns-cache" else args.kind
    pin_self()
    workdir = scratch_dir(args.workdir, "pydns-hotpath-")
    cluster = gen_cluster.cluster_from_args(args)
    paths = gen_cluster.write_all(cluster, os.path.join(workdir, "cluster"), args.queries,
                                  external_count=min(1000, max(10, args.services)))
    with open(paths["external"]) as fh:
        external = json.load(fh)
    upstream = None
    if args.server != "pydns":
        Upstream = throughput._upstream_class()
        if Upstream is None:
            sys.exit(f"profile: {args.server} needs pydns.testing.upstream.Upstream")
        upstream = Upstream(records={(n, "A"): [ip] for n, ip in external.items()}, ttl=3600).start()
    available = pydns_plugins()
    missing = throughput.PLUGINS_NEEDED[args.server] - available
    if missing:
        sys.exit(f"profile: pydns lacks plugin(s) {', '.join(sorted(missing))}")
    servers = throughput.start_servers({args.server}, paths, workdir, upstream.port if upstream else None, available)
    srv: Server = servers[args.server]
    prof_path = os.path.join(workdir, "profile.raw" if tool == "py-spy" else "profile.pstats")
    if tool == "cprofile":
        # the same server again, this time under cProfile (it writes its stats when SIGTERM ends it)
        corefile = os.path.join(workdir, f"{args.server}.Corefile")
        port = srv.port
        srv.stop()
        code = CPROFILE_RUNNER.replace("PATH", repr(prof_path))
        srv = Server(args.server, pinned([sys.executable, "-c", code, "-conf", corefile, "-quiet"], SERVER_CORE), port,
                     env=pydns_env(), cwd=ROOT, log_dir=workdir)
    result = {"machine": machine(), "config": {k: v for k, v in vars(args).items() if k != "json"}, "tool": tool,
              "server": args.server, "kind": kind}
    try:
        with open(paths["checks"]) as fh:
            checks = json.load(fh)["checks"]
        probe = ([{"name": n, "type": "A", "rcode": "NOERROR", "answers": [ip]} for n, ip in list(external.items())[:1]]
                 if kind == "ext" else checks[:1])
        wait_until(lambda: not answers_correctly(srv.port, probe, 0.5), 120, 0.1, server=srv)
        datafile = paths["queries"][kind]
        dnsperf(srv.port, datafile, 10, outstanding=50, loops=1)  # warm-up
        if tool == "py-spy":
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(srv.pid), "--duration", f"{int(args.seconds)}",
                                    "--rate", str(args.rate), "--format", "raw", "-o", prof_path, "--nonblocking"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(0.3)
            run = dnsperf(srv.port, datafile, args.seconds + 0.5, qps=args.qps or None, outstanding=200)
            out, _ = spy.communicate(timeout=args.seconds + 60)
            if spy.returncode != 0 or not os.path.exists(prof_path):
                sys.exit(f"py-spy failed: {out[-1000:]}")
        else:
            run = dnsperf(srv.port, datafile, args.seconds, qps=args.qps or None, outstanding=200)
        result["queries"] = run["completed"]
    finally:
        srv.stop(2.0)  # no need to sit through a lameduck period
        if upstream is not None:
            upstream.stop()
    result.update(analyse_raw(read_raw(prof_path), args.top) if tool == "py-spy" else analyse_cprofile(prof_path, args.top))
    for row in result["lines"]:
        log(f"{row['share']:6.1%}  {row['file']}:{row['line']:<5} {row['function']:28} {row['source']}")
    if not result["lines"]:
        for row in result["functions"]:
            log(f"{row['share']:6.1%}  {row['function']:32} {row['file']}:{row.get('line', '')}")
    steps = ", ".join(f"{k} {v:.0%}" for k, v in result["steps"].items())
    hot = result["lines"][0] if result["lines"] else result["functions"][0]
    line = (f"hotpath ({tool}, {args.server}, {kind}, {result['queries']} queries): "
            + (f"steps: {steps}; " if steps else "")
            + f"hottest: {hot.get('source') or hot['function']} ({hot['share']:.0%})")
    finish(result, line, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
