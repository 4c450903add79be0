"""What the kernel drops and what a UDP send refuses is counted, not lost silently.

* Kernel drops on a listener's socket (its receive buffer full) are read from
  /proc/net/udp and exported as ``pydns_udp_receive_drops_total``; ``-so-rcvbuf`` sets the
  buffer (a tiny one here, so that a burst overflows it).
* A reply ``sendto`` refuses is counted per cause in ``pydns_udp_send_errors_total`` and
  logged once.  (A reply too large for a datagram no longer gets there: it is truncated to
  what fits first.)
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import dns.message
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pydns.testing import free_port, wait_until_answering

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.timeout(60)


def metric(port: int, name: str, **labels) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body = resp.read().decode()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def proc_drops(port: int) -> int:
    local = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as fh:
        return sum(int(f[12]) for f in (line.split() for line in fh) if len(f) >= 13 and f[1] == local)


def test_kernel_drops_on_a_listener_are_exported(tmp_path):
    port, metrics = free_port(), free_port()
    corefile = tmp_path / "Corefile"
    corefile.write_text(f".:{port} {{\n bind 127.0.0.1\n prometheus 127.0.0.1:{metrics}\n whoami\n}}\n")
    server = subprocess.Popen([sys.executable, "-m", "pydns", "-conf", str(corefile), "-so-rcvbuf", "4k", "-quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": ROOT})
    try:
        wait_until_answering(port, server)
        query = dns.message.make_query("example.org.", "A")
        assert metric(metrics, "pydns_udp_receive_drops_total", server=f"dns://127.0.0.1:{port}") == 0
        wire = query.to_wire()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as burst:
            burst.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            for _ in range(3000):  # far faster than any server answers: a 4 KiB buffer overflows
                burst.sendto(wire, ("127.0.0.1", port))
        time.sleep(0.5)
        dropped = proc_drops(port)
        assert dropped > 0
        assert metric(metrics, "pydns_udp_receive_drops_total", server=f"dns://127.0.0.1:{port}") == dropped
    finally:
        server.terminate()
        server.wait(15)


def _udp_from_port_zero(payload: bytes, port: int) -> None:
    """Send ``payload`` to 127.0.0.1:``port`` from source port 0, which no UDP socket can
    send from; a raw socket writes the UDP header itself (the kernel adds the IP header)."""
    header = struct.pack("!HHHH", 0, port, 8 + len(payload), 0)  # checksum 0: none, allowed on IPv4
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP) as raw:
        raw.sendto(header + payload, ("127.0.0.1", 0))


@pytest.mark.skipif(os.geteuid() != 0, reason="a raw socket needs root (CI runs as root)")
def test_a_reply_the_kernel_refuses_is_counted_and_logged_once(serve, caplog):
    """A query from source port 0 gets a reply sendto refuses (EINVAL): counted per cause in
    ``pydns_udp_send_errors_total``, logged once, and the listener goes on."""
    metrics = free_port()
    srv = serve(f".:0 {{\n bind 127.0.0.1\n prometheus 127.0.0.1:{metrics}\n whoami\n}}\n")
    query = dns.message.make_query("who.example.", "A").to_wire()
    before = metric(metrics, "pydns_udp_send_errors_total", cause="EINVAL")  # counters are per process
    for _ in range(2):
        _udp_from_port_zero(query, srv.port)
    deadline = time.monotonic() + 5
    while metric(metrics, "pydns_udp_send_errors_total", cause="EINVAL") < before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(metrics, "pydns_udp_send_errors_total", cause="EINVAL") == before + 2
    assert srv.query("small.example.", "A").rcode() == 0  # the listener goes on
    logged = [r for r in caplog.records if "(EINVAL;" in r.getMessage()]
    assert len(logged) == (1 if before == 0 else 0)


def test_a_receive_buffer_size_that_is_not_a_size_is_refused_clearly():
    out = subprocess.run([sys.executable, "-m", "pydns", "-so-rcvbuf", "4q", "-validate"], capture_output=True,
                         text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, timeout=30)
    assert out.returncode == 2
    assert "-so-rcvbuf: not a size: '4q' (say 4m, 512k or a number of bytes)" in out.stderr


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs setpriv (util-linux) as root")
def test_a_receive_buffer_the_kernel_caps_is_said_once_at_start(tmp_path):
    """Without CAP_NET_ADMIN (as in a pod) the kernel caps the buffer at net.core.rmem_max."""
    with open("/proc/sys/net/core/rmem_max") as fh:
        rmem_max = int(fh.read())
    port = free_port()
    corefile = tmp_path / "Corefile"
    corefile.write_text(f".:{port} {{\n bind 127.0.0.1\n whoami\n}}\n.:{free_port()} {{\n bind 127.0.0.1\n whoami\n}}\n")
    cmd = ["setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin", sys.executable, "-m", "pydns",
           "-conf", str(corefile), "-so-rcvbuf", str(2 * rmem_max)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": ROOT})
    try:
        wait_until_answering(port, server)
    finally:
        server.terminate()
        _out, err = server.communicate(timeout=15)
    warnings = [line for line in err.splitlines() if "UDP receive buffer" in line]
    assert warnings == [f"[WARNING] UDP receive buffer is {rmem_max} bytes, not the {2 * rmem_max} asked "
                        "(-so-rcvbuf): the kernel caps it at net.core.rmem_max; raise that to allow more"]
