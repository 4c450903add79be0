"""Shared pieces of the benchmark scripts: tools, pinning, /proc readings, dnsperf, output.

Every server a benchmark starts listens on 127.0.0.1 only.  Servers run pinned to one core
and the load generator to another, so that the CPU a server uses can be read from
``/proc/PID/stat`` without the client's work mixed in.
"""

from __future__ import annotations

import atexit
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from pydns.testing import free_port  # noqa: F401 (part of what the scripts import from here)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
INSTALL_HINT = "install them with: apt-get install -y dnsperf dnsmasq-base"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CORE, CLIENT_CORE = 0, 1


# ---------------------------------------------------------------- tools
def find_tool(name: str, *extra_dirs: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in extra_dirs or ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        path = os.path.join(d, name)
        if os.access(path, os.X_OK):
            return path
    return None


def require_tools(*names: str) -> dict[str, str]:
    """Paths of the named programs; exits with an install hint when one is missing."""
    paths, missing = {}, []
    for name in names:
        path = find_tool(name)
        if path is None:
            missing.append(name)
        else:
            paths[name] = path
    if missing:
        sys.exit(f"missing {', '.join(missing)}: {INSTALL_HINT}")
    return paths


def can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(cmd: list[str], core: int) -> list[str]:
    """The command wrapped in ``taskset -c CORE`` (unchanged on a single-core machine)."""
    return ["taskset", "-c", str(core), *cmd] if can_pin() else list(cmd)


def pin_self(core: int = CLIENT_CORE) -> None:
    """Keep this process (the fake API, pollers) off the servers' core."""
    if can_pin():
        os.sched_setaffinity(0, {core})


def pydns_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def pydns_plugins() -> set[str]:
    out = subprocess.run([sys.executable, "-m", "pydns", "-plugins"], capture_output=True, text=True,
                         env=pydns_env(), cwd=ROOT, timeout=60)
    return {line.strip()[4:] for line in out.stdout.splitlines() if line.strip().startswith("dns.")}


def scratch_dir(path: str | None, prefix: str) -> str:
    """``path`` (kept afterwards), or a temporary folder removed when the script ends."""
    if path:
        os.makedirs(path, exist_ok=True)
        return path
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, True)
    return folder


# ---------------------------------------------------------------- /proc
def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/PID/stat), threads that have exited included."""
    with open(f"/proc/{pid}/stat") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _thread_runtimes(pid: int) -> dict[str, int]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                out[tid] = int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


class CpuMeter:
    """CPU a process uses between ``start()`` and ``stop()``, in seconds.

    /proc/PID/stat counts in clock ticks (10 ms), too coarse for a fast server over a few
    seconds.  The same quantity is kept per thread in nanoseconds (/proc/PID/task/*/schedstat);
    it is used when the process's threads are the same at both ends (nothing ran and exited
    in between), otherwise the tick count is.
    """

    def __init__(self, pid: int):
        self.pid = pid

    def start(self) -> "CpuMeter":
        self.ticks0 = cpu_seconds(self.pid)
        self.threads0 = _thread_runtimes(self.pid)
        self.t0 = time.monotonic()
        return self

    def stop(self) -> float:
        self.wall = time.monotonic() - self.t0
        ticks = cpu_seconds(self.pid) - self.ticks0
        threads1 = _thread_runtimes(self.pid)
        self.precise = set(threads1) == set(self.threads0) and bool(threads1)
        if self.precise:
            fine = sum(threads1[t] - self.threads0[t] for t in threads1) / 1e9
            # a thread that came and went in between shows in the ticks only
            if ticks <= fine + 3.0 / CLK_TCK:
                self.seconds = fine
                return fine
            self.precise = False
        self.seconds = ticks
        return ticks


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "pinned": can_pin(),
    }


# ---------------------------------------------------------------- processes
class Server:
    """A server process: its command, its port and its log file; stopped with SIGTERM."""

    def __init__(self, name: str, cmd: list[str], port: int, env: dict | None = None, cwd: str | None = None,
                 log_dir: str | None = None):
        self.name = name
        self.port = port
        log_dir = log_dir or tempfile.gettempdir()
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     start_new_session=True)
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 20) -> str:
        self.log.flush()
        try:
            with open(self.log_path, "rb") as fh:
                return b"\n".join(fh.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def stop_all(servers, timeout: float = 2.0) -> None:
    """SIGTERM to every server at once, then SIGKILL whoever is still there after ``timeout``
    (a lameduck period would only make the benchmark wait)."""
    for srv in servers:
        if srv.proc.poll() is None:
            srv.proc.send_signal(signal.SIGTERM)
    for srv in servers:
        srv.stop(timeout)


# Variants of pydns for side-by-side comparisons, as code run before its command line:
VARIANTS = {
    # asyncio's own event loop even where uvloop is installed
    "standard-loop": "from pydns import loops; loops.uvloop = None",
    # a listener on 127.0.0.1 served as one on every address is (the destination of each
    # datagram read with recvmsg, replies sent from it with sendmsg): what that path costs
    "pktinfo": "from pydns import transport; transport.WILDCARDS += ('127.0.0.1',)",
    # no reply kept by the query's bytes (pydns.replies): every query runs the chain
    "no-memo": "from pydns import replies; replies.MAX_QUERY = 0",
}


def start_pydns(name: str, corefile: str, workdir: str, core: int | None = SERVER_CORE,
                variant: str | None = None) -> tuple[Server, int]:
    """pydns as ``python -m pydns -conf FILE`` on a free port; the Corefile's ``PORT`` is filled in."""
    port = free_port()
    path = os.path.join(workdir, f"{name}.Corefile")
    with open(path, "w") as fh:
        fh.write(corefile.replace("PORT", str(port)))
    run = ("-c", f"{VARIANTS[variant]}; from pydns import cli; raise SystemExit(cli.main())") if variant else ("-m", "pydns")
    cmd = [sys.executable, *run, "-conf", path, "-quiet"]
    if core is not None:
        cmd = pinned(cmd, core)
    return Server(name, cmd, port, env=pydns_env(), cwd=ROOT, log_dir=workdir), port


def wait_until(check, timeout: float, interval: float = 0.05, server: Server | None = None):
    """Call ``check()`` until it returns something true; raise with the server's log on timeout."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        if server is not None and not server.alive():
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}")
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the server may not listen yet
            last_error = exc
        time.sleep(interval)
    where = f"\n{server.tail()}" if server is not None else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s (last error: {last_error!r}){where}")


# ---------------------------------------------------------------- DNS
def ask(port: int, name: str, rdtype: str = "A", timeout: float = 1.0, tcp: bool = False):
    import dns.message
    import dns.query

    q = dns.message.make_query(name, rdtype)
    fn = dns.query.tcp if tcp else dns.query.udp
    return fn(q, "127.0.0.1", port=port, timeout=timeout)


def rcode_text(msg) -> str:
    import dns.rcode

    return dns.rcode.to_text(msg.rcode())


def answers_correctly(port: int, expect: list[dict], timeout: float = 1.0) -> list[str]:
    """Ask each expected question; the list of mismatches (empty when all are right).

    Each item: {"name", "type", "rcode", "answers": [rdata text...] or None to ignore the
    set; "srv": [(port, target)...] compares SRV records without priority and weight}.
    """
    wrong = []
    for e in expect:
        try:
            msg = ask(port, e["name"], e["type"], timeout=timeout)
        except Exception as exc:
            wrong.append(f"{e['name']} {e['type']}: {exc!r}")
            continue
        rcode = rcode_text(msg)
        if rcode != e["rcode"]:
            wrong.append(f"{e['name']} {e['type']}: rcode {rcode}, expected {e['rcode']}")
            continue
        got = {rd.to_text().lower() for rrset in msg.answer for rd in rrset if rrset.rdtype == _rdtype(e["type"])}
        if e.get("srv") is not None:
            got_srv = {(int(t.split()[2]), t.split()[3].lower()) for t in got}
            want = {(int(p), t.lower()) for p, t in e["srv"]}
            if got_srv != want:
                wrong.append(f"{e['name']} SRV: got {sorted(got_srv)}, expected {sorted(want)}")
        elif e.get("answers") is not None:
            want = {a.lower() for a in e["answers"]}
            if got != want:
                wrong.append(f"{e['name']} {e['type']}: got {sorted(got)}, expected {sorted(want)}")
    return wrong


def _rdtype(name: str):
    import dns.rdatatype

    return dns.rdatatype.from_text(name)


# ---------------------------------------------------------------- dnsperf
_DNSPERF_FIELDS = {
    "sent": r"Queries sent:\s+(\d+)",
    "completed": r"Queries completed:\s+(\d+)",
    "lost": r"Queries lost:\s+(\d+)",
    "runtime": r"Run time \(s\):\s+([\d.]+)",
    "qps": r"Queries per second:\s+([\d.]+)",
    "latency_avg": r"Average Latency \(s\):\s+([\d.]+)",
}


def dnsperf(port: int, datafile: str, seconds: float, qps: int | None = None, outstanding: int = 100,
            timeout: float = 1.0, clients: int = 1, core: int | None = CLIENT_CORE, loops: int | None = None) -> dict:
    """Run dnsperf against 127.0.0.1:port and return its figures (completed, qps, latency...)."""
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", datafile, "-l", f"{seconds:g}",
           "-q", str(outstanding), "-t", f"{timeout:g}", "-c", str(clients)]
    if qps:
        cmd += ["-Q", str(int(qps))]
    if loops:
        cmd += ["-n", str(loops)]
    if core is not None:
        cmd = pinned(cmd, core)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + timeout + 60)
    text = out.stdout + out.stderr
    result: dict = {}
    for key, pattern in _DNSPERF_FIELDS.items():
        m = re.search(pattern, text)
        if m:
            result[key] = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
    if "completed" not in result:
        raise RuntimeError(f"dnsperf failed (exit {out.returncode}):\n{text[-2000:]}")
    m = re.search(r"Response codes:\s+(.*)", text)
    if m:
        result["rcodes"] = {k: int(v) for k, v in re.findall(r"([A-Z]+) (\d+)", m.group(1))}
    return result


def add_dnsperf_options(p, *, rounds: int, max_seconds: float = 2.0, outstanding: int = 200, fixed_load: bool = True,
                        max_seconds_flags: tuple[str, ...] = ("--max-seconds",), qps_help: str = "fixed offered load",
                        workdir_help: str = "keep logs here", json_help: str = "write the figures as JSON") -> None:
    """The options of a script that alternates dnsperf runs: --rounds, --max-seconds (the length
    of each unthrottled run), with ``fixed_load`` --cpu-seconds and --qps (the runs at a fixed
    offered load that CPU per query is read from), --outstanding, --workdir and --json.
    Each script passes its own defaults; ``max_seconds_flags`` keeps an older spelling working."""
    p.add_argument("--rounds", type=int, default=rounds, help="alternating rounds (default %(default)s)")
    p.add_argument(*max_seconds_flags, dest="max_seconds", type=float, default=max_seconds,
                   help="length of each unthrottled run (default %(default)s)")
    if fixed_load:
        p.add_argument("--cpu-seconds", type=float, default=2.0, help="length of each fixed-load run (default %(default)s)")
        p.add_argument("--qps", type=int, default=5000, help=qps_help + " (default %(default)s)")
    p.add_argument("--outstanding", type=int, default=outstanding, help="dnsperf queries in flight (default %(default)s)")
    p.add_argument("--workdir", help=workdir_help)
    p.add_argument("--json", metavar="PATH", help=json_help)


# ---------------------------------------------------------------- figures and output
def search_order(name: str, search, ndots: int = 5) -> list[str]:
    """The names glibc's stub asks, in order, for ``name`` with a pod's resolv.conf: the
    search list first when the name has fewer than ``ndots`` dots, else last; a name
    ending in a dot is asked as it is."""
    if name.endswith("."):
        return [name]
    searched = [f"{name}.{domain}" for domain in search]
    return searched + [name] if name.count(".") < ndots else [name] + searched


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def percentile(values, p: float):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    k = (len(values) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(value, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1000 and not unit:
        return f"{value / 1000:.{digits}f}k"
    return f"{value:.{digits}f}{unit}"


def finish(result: dict, line: str, json_path: str | None) -> None:
    """A script's one summary line: kept in its result, written with it, and printed."""
    result["summary"] = line
    write_json(json_path, result)
    print(line)


def write_json(path: str | None, data: dict) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")


def log(msg: str) -> None:
    """Progress goes to stderr; stdout carries only the one summary line."""
    print(msg, file=sys.stderr, flush=True)
