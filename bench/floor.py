"""The cost floor: what answering a UDP query costs before any DNS work is done.

    python bench/floor.py [--rounds 3] [--qps 5000]

Three servers that do no DNS work, measured exactly like throughput.py (pinned to core 0,
dnsperf on core 1, alternating rounds, CPU from /proc at a fixed offered load and
unthrottled):

    echo-asyncio   Python: asyncio's event loop wakes on the socket, recvfrom/sendto in a batch
                   (the shape of pydns's UDP listener), replying with the query's own bytes
    echo-blocking  Python: one thread in a blocking recvfrom/sendto loop, no event loop
    dnsmasq        answering one host-record

The difference between pydns and echo-asyncio is pydns's own per-query work; between
echo-asyncio and echo-blocking, the event loop's; what echo-blocking costs is the kernel's
share (system calls, waking up) plus the interpreter's minimum, and dnsmasq shows the
same floor for a C program.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Server, SERVER_CORE, add_dnsperf_options, fmt, free_port, machine, median,  # noqa: E402
                    pin_self, pinned, require_tools, scratch_dir, stop_all, wait_until, write_json)

ECHO_BATCH = 256


def reply_of(data: bytes) -> bytes:
    """The query turned into an empty NOERROR reply (QR, RD, RA set)."""
    return data[:2] + b"\x81\x80" + data[4:]


def serve_asyncio(port: int) -> None:
    import asyncio

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.setblocking(False)

    def readable():
        for _ in range(ECHO_BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except BlockingIOError:
                return
            sock.sendto(reply_of(data), addr)

    loop = asyncio.new_event_loop()
    loop.add_reader(sock.fileno(), readable)
    loop.run_forever()


def serve_blocking(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    while True:
        data, addr = sock.recvfrom(65535)
        sock.sendto(reply_of(data), addr)


def start(name: str, workdir: str, dnsmasq: str) -> Server:
    port = free_port()
    if name == "dnsmasq":
        conf = os.path.join(workdir, "floor-dnsmasq.conf")
        with open(conf, "w") as fh:
            fh.write("no-resolv\nno-hosts\nlocal=/cluster.local/\nhost-record=floor.cluster.local,10.0.0.1,5\n")
        cmd = [dnsmasq, "-k", f"--conf-file={conf}", f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
               "--log-facility=-", f"--pid-file={os.path.join(workdir, 'floor-dnsmasq.pid')}",
               f"--user={getpass.getuser()}"]
    else:
        cmd = [sys.executable, os.path.abspath(__file__), "--serve", name, "--port", str(port)]
    return Server(name, pinned(cmd, SERVER_CORE), port, log_dir=workdir)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dnsperf_options(p, rounds=3)
    p.add_argument("--serve", choices=("echo-asyncio", "echo-blocking"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        (serve_asyncio if args.serve == "echo-asyncio" else serve_blocking)(args.port)
        return 0

    import throughput

    tools = require_tools("dnsperf", "dnsmasq")
    pin_self()
    workdir = scratch_dir(args.workdir, "pydns-floor-")
    datafile = os.path.join(workdir, "floor.txt")
    with open(datafile, "w") as fh:
        fh.write("floor.cluster.local A\n")
    names = ("echo-asyncio", "echo-blocking", "dnsmasq")
    servers = {n: start(n, workdir, tools["dnsmasq"]) for n in names}
    try:
        import dns.message
        import dns.query

        for srv in servers.values():
            wait_until(lambda: dns.query.udp(dns.message.make_query("floor.cluster.local", "A"), "127.0.0.1",
                                             port=srv.port, timeout=0.5), 20, 0.1, server=srv)
        runs = throughput.alternate(servers, dict.fromkeys(names, datafile), args)
    finally:
        stop_all(servers.values())
    medians = {n: {"cpu_us": median([r["cpu_us"] for r in runs if r["server"] == n]),
                   "max_cpu_us": median([r["max_cpu_us"] for r in runs if r["server"] == n]),
                   "qps_per_core": median([r["qps_per_core"] for r in runs if r["server"] == n])} for n in names}
    line = (f"floor: CPU per query at {args.qps} qps (unthrottled): "
            + ", ".join(f"{n} {fmt(v['cpu_us'])}us ({fmt(v['max_cpu_us'])}us)" for n, v in medians.items()))
    result = {"machine": machine(), "config": {k: v for k, v in vars(args).items() if k not in ("json", "serve", "port")},
              "runs": runs, "medians": medians, "summary": line}
    write_json(args.json, result)
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
