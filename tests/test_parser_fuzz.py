"""Fuzzing the wire parser and ``Request`` with mutations of real queries.

The seeds are queries dig sent (tests/corpus/queries.hex).  A deterministic mutator
(``random.Random(seed)``) flips, inserts, deletes and splices bytes, plants compression
pointers and rewrites section counts.  For every input:

- ``Request`` either accepts it or raises ``MalformedQuery`` (with a FORMERR header that
  carries the query's ID, or nothing to send); nothing else;
- an accepted query round-trips: its name is what dnspython reads there, its escaped text
  form reads back to the same name, and a reply rendered for it parses with dnspython and
  carries the same ID and question;
- ``Parser.get_name`` (and ``skip_name``) at any offset agrees with dnspython's name
  reader (same name, or both refuse it: dnspython too wants pointers strictly backwards, no overlap, and names of 255
  octets at most).

CI runs a short, fixed number of iterations.  The longer run::

    python -m tests.test_parser_fuzz --iterations 1000000 --seed 7
"""

from __future__ import annotations

import argparse
import pathlib
import random
import struct
import sys

import dns.exception
import dns.message
import dns.name
import dns.wire

from pydns.parser import Parser, WireError
from pydns.wire import FORMERR, NOERROR, Answer, MalformedQuery, Request

CORPUS = pathlib.Path(__file__).with_name("corpus") / "queries.hex"
CI_ITERATIONS = 3000
_INTERESTING = (0x00, 0x01, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xC0 | 0x3F, 0xFF)


def seeds() -> list[bytes]:
    lines = CORPUS.read_text().splitlines()
    return [bytes.fromhex(line) for line in lines if line and not line.startswith("#")]


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randrange(len(out) + 1)
        if op == 0 and out:  # one random byte
            out[min(pos, len(out) - 1)] = rng.getrandbits(8)
        elif op == 1 and out:  # a boundary value (label types, lengths)
            out[min(pos, len(out) - 1)] = rng.choice(_INTERESTING)
        elif op == 2:  # insert a few random bytes
            out[pos:pos] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 8)))
        elif op == 3:  # delete a range
            del out[pos : pos + rng.randint(1, 16)]
        elif op == 4:  # cut short
            del out[pos:]
        elif op == 5:  # a compression pointer anywhere, to anywhere
            out[pos:pos + 2] = struct.pack("!H", 0xC000 | rng.randrange(max(len(out), 1) + 16))
        elif op == 6 and len(out) >= 12:  # other section counts
            out[4 + 2 * rng.randrange(4) : 6 + 2 * rng.randrange(4)] = struct.pack("!H", rng.choice((0, 1, 2, 3, 300)))
        else:  # graft a piece of another seed
            other = rng.choice(corpus)
            start = rng.randrange(len(other))
            out[pos:pos] = other[start : start + rng.randint(1, 40)]
    return bytes(out)


def check_query(data: bytes) -> bool:
    """Whether ``Request`` accepted ``data``; raises AssertionError on any wrong behaviour."""
    try:
        req = Request(data, "udp")
    except MalformedQuery as bad:
        if bad.reply is not None:
            assert len(bad.reply) == 12 and bad.reply[:2] == data[:2]
            assert struct.unpack_from("!H", bad.reply, 2)[0] & 0x800F == 0x8000 | FORMERR
        return False
    expected, used = dns.name.from_wire(data, 12)
    assert dns.name.from_wire(req.qwire, 0)[0] == expected and 12 + used == req.qend
    assert len(req.qwire) <= 255 and req.key == req.qwire.lower()
    assert req.name.isprintable() and dns.name.from_text(req.name) == expected
    out = bytearray(req.render(Answer(NOERROR)))
    out[2] &= 0x87  # as a plain QUERY: dnspython reads UPDATE replies by other rules
    reply = dns.message.from_wire(bytes(out))
    assert reply.id == struct.unpack_from("!H", data)[0]
    question = reply.question[0]
    assert question.name == expected and (question.rdtype, question.rdclass) == (req.qtype, req.qclass)
    assert (reply.edns >= 0) == bool(req.edns_size)
    return True


def check_names(data: bytes, offsets) -> None:
    shared = Parser(data)  # one parser for every offset: what skip_name remembers must hold for all
    for pos in offsets:
        try:
            theirs = dns.wire.Parser(data, pos).get_name(decompress=True).to_wire()
        except dns.name.PointerChainTooLong:
            continue  # dnspython stops at 16 pointers; pydns needs no such limit (each leads further back)
        except (dns.exception.FormError, dns.name.NameTooLong, dns.name.BadLabelType, dns.name.BadPointer):
            theirs = None
        reader = Parser(data, pos)
        try:
            ours = reader.get_name()
        except WireError:
            ours = None
        shared.current = pos
        try:
            shared.skip_name()
            skipped = True
        except WireError:
            skipped = False
        assert (ours is None) == (theirs is None) == (not skipped), (data.hex(), pos, ours, theirs)
        if ours is not None:
            assert ours.lower() == theirs.lower() and reader.current == shared.current, (data.hex(), pos)


def run(iterations: int, seed: int) -> tuple[int, int]:
    """Fuzz for ``iterations`` inputs; (accepted, refused)."""
    corpus = seeds()
    rng = random.Random(seed)
    accepted = refused = 0
    for i in range(iterations):
        data = mutate(rng, rng.choice(corpus), corpus)
        try:
            if check_query(data):
                accepted += 1
            else:
                refused += 1
            check_names(data, [rng.randrange(len(data) + 1) for _ in range(4)])
        except Exception:
            print(f"iteration {i}, seed {seed}: input {data.hex()}", file=sys.stderr)
            raise
    return accepted, refused


def test_real_queries_are_accepted_as_they_are():
    for data in seeds():
        assert check_query(data)
        check_names(data, range(len(data)))


def test_mutated_queries_are_refused_cleanly_or_round_trip():
    accepted, refused = run(CI_ITERATIONS, seed=20261206)
    # The mutator must exercise both sides, or the test would prove nothing.
    assert accepted > CI_ITERATIONS // 10 and refused > CI_ITERATIONS // 10


def main() -> None:
    ap = argparse.ArgumentParser(description="Fuzz pydns's wire parser with mutated real queries.")
    ap.add_argument("--iterations", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    accepted, refused = run(args.iterations, args.seed)
    print(f"{args.iterations} inputs: {accepted} accepted, {refused} refused, no failure")


if __name__ == "__main__":
    main()
