"""The ``pydns`` command: CoreDNS's flags, plus ``-validate`` and ``pydns explain NAME [TYPE]``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

from pydns import __version__, loops
from pydns.corefile import CorefileError
from pydns.demo import DEMO_PORT, demo_corefile
from pydns.plugin import load_plugins
from pydns.server import Instance, build, corefile_path
from pydns.transport import DEFAULT_RCVBUF, parse_size

log = logging.getLogger("pydns")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pydns", description="A pure-Python cluster DNS server (CoreDNS compatible).")
    p.add_argument("-conf", "--conf", dest="conf", metavar="PATH", help="Corefile to load (default: ./Corefile, else the built-in demo)")
    p.add_argument("-dns.port", "--dns.port", dest="dns_port", type=int, metavar="N", help="default port for server blocks that name none (53)")
    p.add_argument("-so-rcvbuf", "--so-rcvbuf", dest="so_rcvbuf", type=_size, default=DEFAULT_RCVBUF, metavar="SIZE",
                   help="receive buffer of each UDP socket, as 4m, 512k or bytes; 0 keeps the kernel's default (4m)")
    p.add_argument("-plugins", "--plugins", action="store_true", help="list the plugins this build knows and exit")
    p.add_argument("-version", "--version", action="store_true", help="print the version and exit")
    p.add_argument("-validate", "--validate", action="store_true", help="parse and set up the Corefile without serving; print errors as FILE:LINE: message")
    p.add_argument("-quiet", "--quiet", action="store_true", help="print nothing at start-up (logs are unchanged)")
    p.add_argument("-pidfile", "--pidfile", metavar="PATH", help="write the process id here while serving")
    return p


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def revision() -> str:
    """The commit pydns was built from, where known: a ``REVISION`` file written into the
    package when it was built (the image does), else git's, when running from a checkout."""
    package = Path(__file__).resolve().parent
    stamped = package / "REVISION"
    if stamped.is_file():
        return stamped.read_text().strip()
    if (package.parent / ".git").exists():
        try:
            out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=package.parent, capture_output=True,
                                 text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""
    return ""


def version_text() -> str:
    """CoreDNS's two version lines: name-version, then platform, runtime and commit."""
    runtime = [f"{sys.platform}/{platform.machine()}", f"{platform.python_implementation()} {platform.python_version()}"]
    commit = revision()
    return f"pydns-{__version__}\n" + ", ".join(runtime + ([commit] if commit else []))


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # -quiet, as CoreDNS's, only drops the start-up banner (see serve); logs stay.
    root.setLevel(logging.INFO)
    for noisy in ("kubernetes", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _Formatter(logging.Formatter):
    """CoreDNS's log lines: ``[INFO] plugin/reload: message``."""

    def format(self, record: logging.LogRecord) -> str:
        level = "WARNING" if record.levelno == logging.WARNING else record.levelname
        name = record.name
        prefix = f"{name}: " if name.startswith("plugin/") else ""
        text = f"[{level}] {prefix}{record.getMessage()}"
        if record.exc_info and record.levelno >= logging.ERROR:
            text += "\n" + self.formatException(record.exc_info)
        return text


def make_instance(conf: str | None, dns_port: int | None, so_rcvbuf: int = DEFAULT_RCVBUF) -> Instance:
    path = corefile_path(conf)
    if path is None:
        return Instance(None, demo_corefile(), dns_port if dns_port is not None else DEMO_PORT, so_rcvbuf)
    return Instance(path, dns_port=dns_port if dns_port is not None else 53, so_rcvbuf=so_rcvbuf)


def validate(instance: Instance) -> int:
    """Parse and set up the Corefile without serving; print every error found, FILE:LINE: message."""

    async def run() -> int:
        errors: list[CorefileError] = []
        warnings: list[str] = []
        configs = []
        try:
            blocks = instance.read(warnings=warnings, errors=errors)
            configs = build(blocks, instance.dns_port, instance, errors)
        except CorefileError as exc:  # the text itself does not parse: nothing after it can be checked
            errors.append(exc)
        for warning in warnings:
            log.warning("%s", warning)
        # By file (in the order they were first found wrong), then by line.
        files = list(dict.fromkeys(err.file for err in errors))
        for err in sorted(errors, key=lambda e: (files.index(e.file), e.line or 0)):
            print(err, file=sys.stderr)
        if errors:
            return 1
        where = instance.path or "built-in Corefile"
        print(f"{where}: OK ({len(configs)} server block{'s' if len(configs) != 1 else ''})")
        return 0

    return asyncio.run(run())


def banner(instance: Instance) -> str:
    """What CoreDNS prints on stdout once serving: each zone:port, then the version lines."""
    served = [f"{key.zone}:{instance.port_of(key.port)}" for config in instance.configs for key in config.keys]
    return "\n".join([*dict.fromkeys(served), version_text()])


def write_pidfile(path: str) -> bool:
    """CoreDNS's -pidfile: a failure to write it is logged and serving goes on."""
    try:
        Path(path).write_text(f"{os.getpid()}\n")
    except OSError as exc:
        log.error("could not write pidfile: %s", exc)
        return False
    return True


async def serve(instance: Instance, quiet: bool = False, pidfile: str | None = None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: asyncio.ensure_future(instance.reload()))
    await instance.start()
    if not quiet:
        print(banner(instance), flush=True)
    wrote_pidfile = pidfile is not None and write_pidfile(pidfile)
    try:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(instance.stopping.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        log.info("shutting down")
        await instance.stop()
    finally:
        if wrote_pidfile:
            Path(pidfile).unlink(missing_ok=True)
    return 1 if instance.fatal_error else 0


def explain_main(argv: list[str]) -> int:
    """``pydns explain NAME [TYPE]``: ask a running pydns (its *explain* endpoint) why NAME answers as it does."""
    from pydns import explain

    p = argparse.ArgumentParser(prog="pydns explain", description="Ask a running pydns why a name answers as it does "
                                "(its Corefile needs the explain plugin).")
    p.add_argument("name")
    p.add_argument("type", nargs="?", default="A")
    p.add_argument("-url", "--url", default="http://127.0.0.1:8181",
                   help="where the explain endpoint listens (default http://127.0.0.1:8181)")
    p.add_argument("-port", "--port", type=int, help="the DNS port to ask about, where pydns listens on several")
    p.add_argument("-json", "--json", action="store_true", help="print the endpoint's JSON")
    args = p.parse_args(argv)
    try:
        code, out = explain.fetch(args.url, args.name, args.type, args.port)
    except OSError as exc:
        print(f"pydns explain: cannot reach {args.url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 2
    if code != 200:
        print(f"pydns explain: {out.get('error') or code}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2) if args.json else explain.describe(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["explain"]:
        return explain_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.version:
        print(version_text())
        return 0
    if args.plugins:
        print("Server types:\n  dns\n\nCaddyfile loaders:\n  flag\n  default\n\nOther plugins:")
        for name in sorted(load_plugins()):
            print(f"  dns.{name}")
        return 0
    setup_logging()
    instance = make_instance(args.conf, args.dns_port, args.so_rcvbuf)
    if args.validate:
        return validate(instance)
    try:
        return loops.run(serve(instance, quiet=args.quiet, pidfile=args.pidfile))
    except CorefileError as exc:
        print(f"pydns: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
