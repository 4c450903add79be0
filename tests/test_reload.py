"""Reloading the Corefile: under load, with broken edits, by SIGUSR1, and by the reload plugin."""

from __future__ import annotations

import http.client
import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pydns.corefile import CorefileError
from pydns.testing import ServerThread
from tests.conftest import free_port


def http_get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def metric(port: int, name: str) -> dict[tuple, float]:
    """Label values -> value of every sample called ``name`` on /metrics."""
    status, body = http_get(port, "/metrics")
    assert status == 200
    return {tuple(sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(body) for s in f.samples if s.name == name}


def failed_reloads(port: int) -> float:
    return metric(port, "coredns_reload_failed_total")[()]


def rcode(port: int, name: str, tcp: bool = False) -> int:
    q = dns.message.make_query(name, "A")
    fn = dns.query.tcp if tcp else dns.query.udp
    return fn(q, "127.0.0.1", port=port, timeout=2).rcode()


def wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def serve_file(serve, conf, text: str) -> tuple[ServerThread, int, int]:
    """Start pydns from ``text`` written to ``conf``: the server, its DNS port, its HTTP port."""
    conf.write_text(text)
    srv = serve("", path=str(conf))
    return srv, srv.port, srv.instance.http[("127.0.0.1", 0)].bound_port


class Load(threading.Thread):
    """Sequential queries over one transport; every answer must be a NOERROR whoami answer."""

    def __init__(self, port: int, count: int, tcp: bool, seconds: float = 10.0):
        super().__init__(daemon=True)
        self.port, self.count, self.tcp, self.seconds = port, count, tcp, seconds
        self.done = 0
        self.failures: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        family = socket.SOCK_STREAM if self.tcp else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, family) as sock:
            sock.settimeout(2)
            sock.connect(("127.0.0.1", self.port))
            while self.done < self.count and time.monotonic() < deadline:
                q = dns.message.make_query(f"q{self.done}.load.test", "A")
                try:
                    if self.tcp:
                        dns.query.send_tcp(sock, q)
                        reply, _ = dns.query.receive_tcp(sock, time.time() + 2)
                    else:
                        sock.send(q.to_wire())
                        reply = dns.message.from_wire(sock.recv(65535))
                    if reply.rcode() != dns.rcode.NOERROR or not reply.additional:
                        self.failures.append(f"{q.question[0].name}: {dns.rcode.to_text(reply.rcode())}")
                except Exception as exc:  # a timeout or a closed connection is a dropped query
                    self.failures.append(f"{q.question[0].name}: {exc!r}")
                self.done += 1


def test_reload_under_load_drops_no_query(serve, tmp_path):
    conf = tmp_path / "Corefile"
    base = "load.test:0 {\n bind 127.0.0.1\n whoami\n}\n"
    conf.write_text(base)
    srv = serve("", path=str(conf))
    port = srv.port
    assert rcode(port, "x.other.test") == dns.rcode.REFUSED
    udp, tcp = Load(port, 2000, tcp=False), Load(port, 400, tcp=True)
    udp.start()
    tcp.start()
    versions = [base + "other.test:0 {\n bind 127.0.0.1\n whoami\n}\n",
                base + "other.test:0 {\n bind 127.0.0.1\n log\n whoami\n}\n",
                base + "other.test:0 {\n bind 127.0.0.1\n errors\n whoami\n}\n"]
    for step, text in zip((300, 900, 1500), versions):
        wait_for(lambda: udp.done >= step or not udp.is_alive(), 10, f"{step} queries")
        conf.write_text(text)
        assert srv.reload()
    udp.join(15)
    tcp.join(15)
    assert udp.done == 2000 and tcp.done == 400
    assert udp.failures == [] and tcp.failures == []
    assert srv.instance.generation == 3
    assert rcode(port, "x.other.test") == dns.rcode.NOERROR
    assert rcode(port, "x.other.test", tcp=True) == dns.rcode.NOERROR


def test_broken_edits_keep_the_running_configuration(serve, tmp_path, caplog):
    conf = tmp_path / "Corefile"
    good = ("keep.test:0 {\n bind 127.0.0.1\n health 127.0.0.1:0\n"
            " prometheus 127.0.0.1:0\n whoami\n}\n")
    srv, dns_port, http = serve_file(serve, conf, good)
    failed = failed_reloads(http)

    # An unknown directive: the build fails, naming the line.
    conf.write_text(good.replace(" whoami\n", " whoami\n foo\n"))
    assert srv.reload() is False
    assert f"{conf}:6: unknown directive 'foo'" in caplog.text
    assert failed_reloads(http) == failed + 1

    # A DNS port that cannot be bound: the new plugins had started (health took over
    # /health on the shared listener) and must hand everything back.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        conf.write_text(good + f"busy.test:{taken} {{\n bind 127.0.0.1\n whoami\n}}\n")
        assert srv.reload() is False
    assert f"{conf}:7: listen udp 127.0.0.1:{taken}:" in caplog.text
    assert failed_reloads(http) == failed + 2
    assert http_get(http, "/health") == (200, "OK")

    # An HTTP port that cannot be bound.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        conf.write_text(good.replace("health 127.0.0.1:0", f"health 127.0.0.1:{taken}"))
        assert srv.reload() is False
    assert f"{conf}:3: plugin/health: listen tcp 127.0.0.1:{taken}: bind: address already in use" in caplog.text
    assert failed_reloads(http) == failed + 3
    assert http_get(http, "/health") == (200, "OK")
    assert rcode(dns_port, "x.keep.test") == dns.rcode.NOERROR
    assert srv.instance.generation == 0

    # Fixed again: the reload goes through.
    conf.write_text(good.replace(" whoami\n", " log\n whoami\n"))
    assert srv.reload() is True
    assert rcode(dns_port, "x.keep.test") == dns.rcode.NOERROR
    assert http_get(http, "/health") == (200, "OK")


def test_sigusr1_reloads_the_corefile(tmp_path):
    port, metrics_port = free_port(), free_port()
    conf = tmp_path / "Corefile"
    good = f"a.sig.test:{port} {{\n bind 127.0.0.1\n prometheus 127.0.0.1:{metrics_port}\n whoami\n}}\n"
    conf.write_text(good)
    proc = subprocess.Popen([sys.executable, "-m", "pydns", "-conf", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def answers(name: str) -> bool:
            try:
                return rcode(port, name) == dns.rcode.NOERROR
            except (dns.exception.Timeout, OSError):
                return False

        wait_for(lambda: answers("x.a.sig.test"), 20, "pydns to start")
        assert rcode(port, "x.b.sig.test") == dns.rcode.REFUSED
        # A Corefile with no server block: the reload fails, the running one keeps serving.
        failed = failed_reloads(metrics_port)
        conf.write_text("# nothing here\n")
        proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: failed_reloads(metrics_port) == failed + 1, 10, "the failed reload")
        assert answers("x.a.sig.test")
        conf.write_text(good.replace("a.sig.test", "b.sig.test"))
        proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: answers("x.b.sig.test"), 10, "the reload")
        assert rcode(port, "x.a.sig.test") == dns.rcode.REFUSED
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = proc.stderr.read()
    assert f"reload failed, keeping the running configuration: {conf}: no server block" in log
    assert "reload: configuration replaced" in log


def test_reload_plugin_follows_imported_files(serve, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    conf, extra = tmp_path / "Corefile", tmp_path / "extra.conf"
    conf.write_text("a.imp.test:0 {\n bind 127.0.0.1\n reload 2s 1s\n prometheus 127.0.0.1:0\n whoami\n}\n"
                    "import extra.conf\n")
    extra.write_text("# more server blocks go here\n")
    srv = serve("", path=str(conf))
    port, http = srv.port, srv.instance.http[("127.0.0.1", 0)].bound_port
    failed = failed_reloads(http)
    first = re.findall(r"Running configuration SHA512 = ([0-9a-f]{128})", caplog.text)
    assert len(first) == 1
    assert list(metric(http, "coredns_reload_version_info")) == [(("hash", "sha512"), ("value", first[0]))]
    assert rcode(port, "x.b.imp.test") == dns.rcode.REFUSED

    # An edit to the imported file alone is noticed and applied.
    extra.write_text("b.imp.test:0 {\n bind 127.0.0.1\n whoami\n}\n")
    wait_for(lambda: rcode(port, "x.b.imp.test") == dns.rcode.NOERROR, 10, "the imported block")
    digests = re.findall(r"Running configuration SHA512 = ([0-9a-f]{128})", caplog.text)
    assert len(digests) == 2 and digests[1] != digests[0]
    assert list(metric(http, "coredns_reload_version_info")) == [(("hash", "sha512"), ("value", digests[1]))]

    # The new configuration's watcher carries on: a broken edit fails (and is counted)...
    extra.write_text("b.imp.test:0 {\n bind 127.0.0.1\n whoami\n nosuchplugin\n}\n")
    wait_for(lambda: failed_reloads(http) == failed + 1, 10, "the failed reload")
    assert f"{extra}:4: unknown directive 'nosuchplugin'" in caplog.text
    assert rcode(port, "x.b.imp.test") == dns.rcode.NOERROR

    # ...and the watcher survives it: the next good edit is applied.
    extra.write_text("c.imp.test:0 {\n bind 127.0.0.1\n whoami\n}\n")
    wait_for(lambda: rcode(port, "x.c.imp.test") == dns.rcode.NOERROR, 10, "the fixed block")
    assert rcode(port, "x.b.imp.test") == dns.rcode.REFUSED
    assert failed_reloads(http) == failed + 1


@pytest.mark.parametrize("args, message", [
    ("1s", "plugin/reload: interval value must be greater or equal to 2s"),
    ("2s 500ms", "plugin/reload: jitter value must be greater or equal to 1s"),
    ("soon", "plugin/reload: invalid duration 'soon'"),
    ("2s 1s 1s", "plugin/reload: wrong argument count"),
    ("{\n every 2s\n }", "plugin/reload: unknown property 'every'"),
])
def test_setup_errors(tmp_path, args, message):
    conf = tmp_path / "Corefile"
    conf.write_text(f".:0 {{\n reload {args}\n}}\n")
    with pytest.raises(CorefileError) as err:
        ServerThread("", path=str(conf)).start()
    assert message in str(err.value)
    assert str(err.value).split(": ")[0] in (f"{conf}:2", f"{conf}:3")


NO_SERVER_BLOCK = {
    "empty": "",
    "comments only": "# everything is commented out\n# .:53 {\n#  whoami\n# }\n",
    "snippets only": "(common) {\n errors\n log\n}\n",
}


@pytest.mark.parametrize("text", NO_SERVER_BLOCK.values(), ids=NO_SERVER_BLOCK.keys())
def test_corefile_with_no_server_block_is_a_failed_reload(serve, tmp_path, caplog, text):
    conf = tmp_path / "Corefile"
    good = ("keep.test:0 {\n bind 127.0.0.1\n reload 2s 1s\n health 127.0.0.1:0\n ready 127.0.0.1:0\n"
            " prometheus 127.0.0.1:0\n whoami\n}\n")
    srv, dns_port, http = serve_file(serve, conf, good)
    failed = failed_reloads(http)

    def everything_answers() -> None:
        assert rcode(dns_port, "x.keep.test") == dns.rcode.NOERROR
        assert rcode(dns_port, "x.keep.test", tcp=True) == dns.rcode.NOERROR
        assert http_get(http, "/health") == (200, "OK")
        assert http_get(http, "/ready") == (200, "OK")

    # The reload plugin notices the change, and the reload fails, once.
    conf.write_text(text)
    wait_for(lambda: failed_reloads(http) == failed + 1, 10, "the failed reload")
    assert f"{conf}: no server block" in caplog.text
    everything_answers()
    # A reload asked for directly (as SIGUSR1 does) fails the same way.
    assert srv.reload() is False
    assert failed_reloads(http) == failed + 2
    everything_answers()
    time.sleep(3)  # the watcher does not try the same broken file again
    assert failed_reloads(http) == failed + 2
    assert srv.instance.generation == 0

    # A good file again: the watcher (still the running configuration's) applies it.
    conf.write_text(good.replace("keep.test", "back.test"))
    wait_for(lambda: rcode(dns_port, "x.back.test") == dns.rcode.NOERROR, 10, "the good file")
    assert rcode(dns_port, "x.keep.test") == dns.rcode.REFUSED
    assert http_get(http, "/health") == (200, "OK")
    assert failed_reloads(http) == failed + 2

