"""A listener bound to every address replies from the address each query was sent to.

Everything runs in a network namespace the test creates (a wildcard listener must not see
the host's addresses): pydns on port 53 with no *bind* (a dual-stack socket: IPv6, and IPv4
as v4-mapped addresses) and with ``bind 0.0.0.0`` (an IPv4 socket), several local
addresses on the namespace's loopback, clients bound to yet another one, and glibc's stub
resolver (``getent hosts``) through a resolv.conf that names 127.0.0.53 while its queries
leave from 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                       reason="network namespaces need root and iproute2 (.ci/run installs it)"),
]

SERVICE_V4, NODE_V4, CLIENT_V4 = "10.96.0.10", "10.244.0.5", "10.0.0.9"
SERVICE_V6, NODE_V6, CLIENT_V6 = "fd00::10", "fd00::5", "fd00::9"

COREFILE = """\
.:53 {
    log . "{local} {remote} {name}"
    hosts {
        10.1.2.3 web.test
        fd00::1:3 web.test
        fallthrough
    }
    whoami
}
.:5353 {
    bind 0.0.0.0
    hosts {
        10.1.2.3 web.test
    }
}
"""

# Asks each (destination, port, source) once; dnspython rejects a reply that comes from
# any other address than the one asked (UnexpectedSource), as glibc does.
CLIENT = """
import json, sys, dns.message, dns.query, dns.rdatatype
out = []
for dest, port, source in json.loads(sys.argv[1]):
    q = dns.message.make_query("web.test.", "A")
    try:
        r = dns.query.udp(q, dest, port=port, source=source, timeout=2)
        out.append([a.address for rrset in r.answer for a in rrset])
    except Exception as exc:
        out.append(type(exc).__name__)
print(json.dumps(out))
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def netns(tmp_path):
    name = f"pydns-{uuid.uuid4().hex[:8]}"
    ip("netns", "add", name)
    resolv = f"/etc/netns/{name}"
    try:
        ip("-n", name, "link", "set", "lo", "up")
        for addr in (f"{SERVICE_V4}/32", f"{NODE_V4}/32", f"{CLIENT_V4}/32"):
            ip("-n", name, "addr", "add", addr, "dev", "lo")
        for addr in (f"{SERVICE_V6}/128", f"{NODE_V6}/128", f"{CLIENT_V6}/128"):
            ip("-n", name, "-6", "addr", "add", addr, "dev", "lo")
        # `ip netns exec` puts this over /etc/resolv.conf for what it runs
        os.makedirs(resolv)
        with open(f"{resolv}/resolv.conf", "w") as fh:
            fh.write("nameserver 127.0.0.53\noptions timeout:1 attempts:1\n")
        yield name
    finally:
        shutil.rmtree(resolv, ignore_errors=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def pydns_in(netns, tmp_path):
    corefile = tmp_path / "Corefile"
    corefile.write_text(COREFILE)
    log = open(tmp_path / "pydns.log", "w+")
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", "pydns", "-conf", str(corefile)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while ask(netns, [["127.0.0.1", 53, None], ["127.0.0.1", 5353, None]]) != [["10.1.2.3"]] * 2:
            assert proc.poll() is None and time.monotonic() < deadline, "pydns did not start"
            time.sleep(0.2)
        yield netns, log
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def ask(netns: str, questions: list) -> list:
    out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", CLIENT, json.dumps(questions)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_replies_come_from_the_address_asked_ipv4_and_ipv6(pydns_in):
    netns, log = pydns_in
    questions = [[SERVICE_V4, 53, CLIENT_V4], [NODE_V4, 53, CLIENT_V4], ["127.0.0.53", 53, "127.0.0.1"],
                 [SERVICE_V6, 53, CLIENT_V6], [NODE_V6, 53, CLIENT_V6],
                 [SERVICE_V4, 5353, CLIENT_V4], [NODE_V4, 5353, CLIENT_V4]]
    assert ask(netns, questions) == [["10.1.2.3"]] * len(questions)
    # the log plugin's {local} is the address the query was sent to
    log.seek(0)
    lines = log.read().splitlines()
    for local, remote in ((SERVICE_V4, CLIENT_V4), (NODE_V4, CLIENT_V4), (f"[{SERVICE_V6}]", f"[{CLIENT_V6}]")):
        assert any(line.endswith(f"{local} {remote} web.test.") for line in lines), lines[-10:]


def test_glibc_resolves_through_a_second_local_address(pydns_in):
    netns, _log = pydns_in
    out = subprocess.run(["ip", "netns", "exec", netns, "getent", "hosts", "web.test"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] in ("10.1.2.3", "fd00::1:3")
