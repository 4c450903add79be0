"""The timeouts plugin: CoreDNS's syntax and limits, and the values at work over real TCP."""

from __future__ import annotations

import time

import pytest

from pydns.testing import ServerThread
from tests.plugin_cases import startup_error
from tests.tcp_clients import connect, frame, read_replies, wait_hung_up, wait_reset_unread


def corefile(timeouts: str, port: int = 0) -> str:
    return f".:{port} {{\n bind 127.0.0.1\n{timeouts}\n whoami\n}}\n"


# CoreDNS's own setup cases (plugin/timeouts/timeouts_test.go), each a line of its own here.
@pytest.mark.parametrize("block", [
    " timeouts {\n  read 30s\n }",
    " timeouts {\n  read 1m\n  write 2m\n }",
    " timeouts {\n  idle 1h\n }",
    " timeouts {\n  read 10\n  write 20\n  idle 60\n }",
    " timeouts {\n  maxtcpqueries 128\n }",
    " timeouts {\n  maxtcpqueries -1\n }",
    " timeouts {\n  read 10s\n  maxtcpqueries 128\n }",
    " timeouts {\n  read 1s\n  idle 24h\n }",
    " timeouts {\n  read 1s\n }\n timeouts {\n  read 2s\n }",
])
def test_good_configuration_starts(block):
    with ServerThread(corefile(block)) as srv:
        assert len(srv.query("example.org", tcp=True).additional) == 2


@pytest.mark.parametrize("block, line, message", [
    (" timeouts", 3, "timeouts block with no timeouts specified"),
    (" timeouts {\n }", 3, "timeouts block with no timeouts specified"),
    (" timeouts 5s {\n  read 10s\n }", 3, "Wrong argument count or unexpected line ending after '5s'"),
    (" timeouts {\n  read 10s\n  giraffe 30s\n }", 5, "unknown option: 'giraffe'"),
    (" timeouts {\n  read 10s 20s\n  write 30s\n }", 4, "Wrong argument count or unexpected line ending after '20s'"),
    (" timeouts {\n  read\n }", 4, "Wrong argument count or unexpected line ending after 'read'"),
    (" timeouts {\n  write snake\n }", 4, "failed to parse duration 'snake'"),
    (" timeouts {\n  giraffe snake\n }", 4, "failed to parse duration 'snake'"),
    (" timeouts {\n  idle 0s\n }", 4, "timeout provided '0s' needs to be between 1 second and 24 hours"),
    (" timeouts {\n  idle 0\n }", 4, "needs to be between 1 second and 24 hours"),
    (" timeouts {\n  read 999ms\n }", 4, "needs to be between 1 second and 24 hours"),
    (" timeouts {\n  read -5s\n }", 4, "needs to be between 1 second and 24 hours"),
    (" timeouts {\n  read 48h\n }", 4, "needs to be between 1 second and 24 hours"),
    (" timeouts {\n  read 24h1s\n }", 4, "needs to be between 1 second and 24 hours"),
    (" timeouts {\n  maxtcpqueries 0\n }", 4, "maxtcpqueries provided '0' needs to be -1 (unlimited) or a positive integer"),
    (" timeouts {\n  maxtcpqueries -2\n }", 4, "needs to be -1 (unlimited) or a positive integer"),
    (" timeouts {\n  maxtcpqueries snake\n }", 4, "invalid value for maxtcpqueries 'snake'"),
    (" timeouts {\n  maxtcpqueries 1.5\n }", 4, "invalid value for maxtcpqueries '1.5'"),
])
def test_malformed_configuration_names_file_and_line(tmp_path, block, line, message):
    text = startup_error(tmp_path, block, line, message)
    assert text.startswith(f"{tmp_path / 'Corefile'}:{line}: plugin/timeouts: ")


def test_read_timeout_closes_a_trickling_client():
    # A query sent a byte at a time, faster than any per-byte timer would notice, would take
    # 30 s; the read deadline (1 s, for the whole message) closes the connection long before.
    query = frame("slow.example.org")
    with ServerThread(corefile(" timeouts {\n  read 1s\n }")) as srv:
        with connect(srv.port) as s:
            started = time.monotonic()
            closed_after = None
            for i in range(len(query) - 1):
                try:
                    s.sendall(query[i : i + 1])
                except OSError:
                    closed_after = time.monotonic() - started
                    break
                if wait_hung_up(s, 0.2) is not None:
                    closed_after = time.monotonic() - started
                    break
            assert closed_after is not None and 0.8 < closed_after < 2.5, closed_after
        assert len(srv.query("example.org", tcp=True).additional) == 2


def test_idle_timeout_closes_between_queries_and_read_timeout_waits_for_the_first():
    with ServerThread(corefile(" timeouts {\n  read 4s\n  idle 1s\n }")) as srv:
        with connect(srv.port) as s:
            assert wait_hung_up(s, 2.0) is None  # the first query may take the read timeout
            s.sendall(frame("one.example.org"))
            assert len(read_replies(s, 1)) == 1
            closed_after = wait_hung_up(s, 3.5)  # then only the idle timeout
            assert closed_after is not None and closed_after < 2.5


def test_the_last_block_on_a_shared_listener_sets_the_value():
    from tests.conftest import free_port

    port = free_port()
    text = (f"example.org:{port} {{\n bind 127.0.0.1\n timeouts {{\n  idle 30s\n }}\n whoami\n}}\n"
            f"example.net:{port} {{\n bind 127.0.0.1\n timeouts {{\n  idle 1s\n }}\n whoami\n}}\n")
    with ServerThread(text) as srv:
        with connect(srv.port) as s:
            s.sendall(frame("a.example.org"))
            assert len(read_replies(s, 1)) == 1
            closed_after = wait_hung_up(s, 4.0)
            assert closed_after is not None and closed_after < 2.5


def test_write_timeout_closes_a_client_that_does_not_read():
    # 20,000 pipelined queries for a name of 40 addresses (14 MB of replies, more than the
    # kernel's socket buffers hold); the client reads nothing, so the replies pile up, the
    # server stops reading, and 1 s later (the write timeout) it hangs up.
    hosts = "\n".join(f"  10.0.0.{i} big.example.org" for i in range(1, 41))
    flood = frame("big.example.org") * 20000
    with ServerThread(corefile(f" timeouts {{\n  write 1s\n }}\n hosts {{\n{hosts}\n }}")) as srv:
        with connect(srv.port, rcvbuf=4096, timeout=10.0) as s:
            started = time.monotonic()
            try:
                s.sendall(flood)
            except OSError:
                pass  # hung up while the client was still sending
            assert wait_reset_unread(s, 8.0) is not None
            assert time.monotonic() - started < 4.0


def test_maxtcpqueries_closes_after_that_many_replies():
    with ServerThread(corefile(" timeouts {\n  maxtcpqueries 3\n }")) as srv:
        with connect(srv.port) as s:
            s.sendall(b"".join(frame(f"q{i}.example.org", qid=i + 1) for i in range(5)))
            replies = read_replies(s, 5, timeout=3.0)
            assert sorted(r.id for r in replies) == [1, 2, 3]
            assert wait_hung_up(s, 1.0) is not None
        with connect(srv.port) as s:  # a new connection is served again
            s.sendall(frame("again.example.org"))
            assert len(read_replies(s, 1)) == 1


def test_the_plugin_is_listed():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pydns", "-plugins"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "dns.timeouts" in out.stdout.split()
