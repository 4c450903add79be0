"""Query names in logs are escaped as miekg/dns prints them, so a name cannot forge a line.

A label may hold any octet: a newline followed by a fake log line, or an ANSI escape that
recolours a terminal.  The log and errors plugins and the panic report print the name in
presentation format (``\\010``, ``\\027``, ``\\.``, ``\\ ``), each record on one line.
Checked on the real program's stderr and on a panic's log record.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import dns.message
import dns.name
import dns.query
import dns.rcode
from tests.conftest import free_port
from tests.test_cli import wait_for_dns
from tests.test_wire import crash_plugin  # noqa: F401 (a fixture)

FORGED = b"crash\n[ERROR] plugin/kubernetes: FORGED"  # "crash...": tests.test_wire's crashing plugin
HOSTILE = dns.name.Name([FORGED, b"\x1b[31mred", b"a.b", b"example", b"org", b""])
ESCAPED = "crash\\010[ERROR]\\ plugin/kubernetes:\\ FORGED.\\027[31mred.a\\.b.example.org."


def test_log_and_errors_lines_cannot_be_forged(tmp_path):
    port, dead = free_port(), free_port()
    conf = tmp_path / "Corefile"
    conf.write_text(f"example.org:{port} {{\n bind 127.0.0.1\n log\n whoami\n}}\n"
                    f"org:{port} {{\n bind 127.0.0.1\n errors\n forward . 127.0.0.1:{dead}\n}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "pydns", "-conf", str(conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for_dns(port)
        logged = dns.query.udp(dns.message.make_query(HOSTILE, "A"), "127.0.0.1", port=port, timeout=3)
        failed = dns.query.udp(dns.message.make_query(HOSTILE.relativize(dns.name.from_text("example.org"))
                                                      .concatenate(dns.name.from_text("org")), "A"),
                               "127.0.0.1", port=port, timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert logged.rcode() == dns.rcode.NOERROR and failed.rcode() == dns.rcode.SERVFAIL
    lines = err.splitlines()
    assert not [line for line in lines if line.startswith("[ERROR] plugin/kubernetes")], err
    assert "\x1b" not in err
    log_line = [line for line in lines if "FORGED" in line and '"A IN ' in line]
    assert len(log_line) == 1 and f'"A IN {ESCAPED} udp ' in log_line[0], err
    error_line = [line for line in lines if "FORGED" in line and "[ERROR] plugin/errors" in line]
    assert len(error_line) == 1 and " 2 crash\\010[ERROR]\\ plugin/kubernetes:\\ FORGED.\\027[31mred.a\\.b.org. A: " \
        in error_line[0], err


def test_a_panic_report_shows_the_name_escaped(serve, crash_plugin, caplog):
    srv = serve(".:0 {\n bind 127.0.0.1\n erratic\n whoami\n}\n")
    host, port = srv.address
    r = dns.query.udp(dns.message.make_query(HOSTILE, "A"), host, port=port, timeout=3)
    assert r.rcode() == dns.rcode.SERVFAIL
    panics = [rec.getMessage() for rec in caplog.records if rec.getMessage().startswith("panic while serving")]
    assert panics == [f"panic while serving {ESCAPED} 1: RuntimeError('boom')"]


def test_log_zones_match_labels_not_text(serve, caplog):
    """``log example.org`` must not log ``evil\\.example.org.``: one label "evil.example"
    under "org", whose escaped text merely ends in ".example.org."."""
    srv = serve(".:0 {\n bind 127.0.0.1\n log example.org\n whoami\n}\n")
    host, port = srv.address
    caplog.set_level("INFO", logger="querylog")
    for name in (dns.name.Name([b"evil.example", b"org", b""]), dns.name.from_text("www.example.org")):
        assert dns.query.udp(dns.message.make_query(name, "A"), host, port=port, timeout=3).rcode() == 0
    logged = [rec.getMessage() for rec in caplog.records if rec.name == "querylog"]
    assert len(logged) == 1 and '"A IN www.example.org. udp ' in logged[0]
