"""The Corefile parser: valid syntax in all its forms, and errors that name file and line."""

from __future__ import annotations

import os
import textwrap

import pytest

from pydns.corefile import CorefileError, files_of, parse
from pydns.server import Instance, build
from pydns.testing import ServerThread
from pydns.zones import parse_key


def blocks(text: str, file: str = "Corefile"):
    return parse(textwrap.dedent(text), file)


def shape(text: str):
    """Blocks as plain data: [(keys, [(directive, args, nested)])]."""

    def lines(ds):
        return [(str(d.name), [str(a) for a in d.args], lines(d.block) if d.block is not None else None) for d in ds]

    return [([str(k) for k in b.keys], lines(b.directives)) for b in blocks(text)]


VALID = [
    ("single block", ". {\n whoami\n}", [(["."], [("whoami", [], None)])]),
    ("keys with ports and scheme", "dns://example.org:1053 example.net {\n whoami\n}",
     [(["dns://example.org:1053", "example.net"], [("whoami", [], None)])]),
    ("comma separated keys", "a.org, b.org {\n whoami\n}", [(["a.org", "b.org"], [("whoami", [], None)])]),
    ("comma across lines", "a.org,\nb.org {\n whoami\n}", [(["a.org", "b.org"], [("whoami", [], None)])]),
    ("two blocks", "a.org {\n whoami\n}\nb.org:54 {\n log\n whoami\n}",
     [(["a.org"], [("whoami", [], None)]), (["b.org:54"], [("log", [], None), ("whoami", [], None)])]),
    ("nested options", ". {\n health :8080 {\n  lameduck 5s\n }\n}",
     [(["."], [("health", [":8080"], [("lameduck", ["5s"], None)])])]),
    ("doubly nested", ". {\n a x {\n  b {\n   c 1\n  }\n }\n}",
     [(["."], [("a", ["x"], [("b", [], [("c", ["1"], None)])])])]),
    ("quoted argument with spaces", '. {\n log . "{type} {name}"\n}', [(["."], [("log", [".", "{type} {name}"], None)])]),
    ("escaped quote", '. {\n x "a \\"b\\" c"\n}', [(["."], [("x", ['a "b" c'], None)])]),
    ("comments everywhere", "# head\n. { # after brace\n whoami # trailing\n # alone\n}\n",
     [(["."], [("whoami", [], None)])]),
    ("no braces, single block", "example.org\nwhoami\nlog", [(["example.org"], [("whoami", [], None), ("log", [], None)])]),
    ("braces on one line", ". { whoami }", [(["."], [("whoami", [], None)])]),
    ("block on one line", ". {\n health { lameduck 5s }\n}", [(["."], [("health", [], [("lameduck", ["5s"], None)])])]),
    ("reverse zone key", "10.0.0.0/24 {\n whoami\n}", [(["10.0.0.0/24"], [("whoami", [], None)])]),
]


@pytest.mark.parametrize("name,text,expected", VALID, ids=[v[0] for v in VALID])
def test_valid_syntax(name, text, expected):
    assert shape(text) == expected


def test_env_substitution(monkeypatch):
    monkeypatch.setenv("PYDNS_TEST_ZONE", "example.org")
    monkeypatch.setenv("PYDNS_TEST_TTL", "30")
    out = shape(". {\n cache {$PYDNS_TEST_TTL} {%PYDNS_TEST_ZONE%}\n}")
    assert out == [(["."], [("cache", ["30", "example.org"], None)])]


def test_unset_variables_are_warnings_naming_file_and_line(monkeypatch, tmp_path):
    monkeypatch.delenv("PYDNS_TEST_UNSET", raising=False)
    monkeypatch.setenv("PYDNS_TEST_SET", "30")
    (tmp_path / "more.conf").write_text("\nlog {%PYDNS_TEST_UNSET%}\n")
    main = tmp_path / "Corefile"
    main.write_text('. {\n cache {$PYDNS_TEST_SET}\n hosts {\n  fallthrough\n }\n'
                    ' template "a\nb {$PYDNS_TEST_UNSET}"\n import more.conf\n}\n')
    warnings: list[str] = []
    out = parse(main.read_text(), str(main), warnings=warnings)
    assert [str(a) for a in out[0].directives[0].args] == ["30"]
    assert out[0].directives[2].args[0] == "a\nb "  # CoreDNS substitutes nothing
    assert warnings == [
        f"{main}:7: Corefile variable {{$PYDNS_TEST_UNSET}} is not set; it is replaced by nothing",
        f"{tmp_path / 'more.conf'}:2: Corefile variable {{%PYDNS_TEST_UNSET%}} is not set; it is replaced by nothing",
    ]


def test_unset_variable_is_logged_at_start_up(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("PYDNS_TEST_UNSET", raising=False)
    conf = tmp_path / "Corefile"
    conf.write_text(".:0 {\n bind 127.0.0.1\n log {$PYDNS_TEST_UNSET}\n whoami\n}\n")
    with ServerThread("", path=str(conf)) as srv:
        assert srv.query("a.b.", "A").additional
    assert f"{conf}:3: Corefile variable {{$PYDNS_TEST_UNSET}} is not set" in caplog.text


@pytest.mark.parametrize("text", ["", "\n\n", "# . {\n#  whoami\n# }\n", "(common) {\n errors\n}\n"],
                         ids=["empty", "blank lines", "comments only", "snippets only"])
def test_no_server_block_is_an_error(text, tmp_path):
    path = tmp_path / "Corefile"
    path.write_text(text)
    with pytest.raises(CorefileError) as info:
        parse(text, str(path))
    assert str(info.value) == f"{path}: no server block: the Corefile is empty or holds only comments or snippets"
    with pytest.raises(CorefileError, match="no server block"):
        ServerThread("", path=str(path)).start()


def test_build_can_collect_every_error(tmp_path):
    path = tmp_path / "Corefile"
    text = "a.org {\n whoami x\n frob\n}\nb.org:99999 {\n errors {\n  shout\n }\n}\na.org {\n whoami\n}\n"
    path.write_text(text)
    errors: list[CorefileError] = []
    configs = build(parse(text, str(path)), 53, Instance(str(path)), errors)
    assert sorted((e.line, e.message) for e in errors) == [
        (2, "plugin/whoami: takes no arguments, found 'x'"),
        (3, "unknown directive 'frob'"),
        (5, "port 99999 out of range in 'b.org:99999'"),
        (7, "plugin/errors: unknown property 'shout'"),  # checked although its block's key is broken
        (10, "cannot serve dns://a.org.:53 - it is already defined"),
    ]
    assert [c.zones for c in configs] == [["a.org."], ["a.org."]]
    with pytest.raises(CorefileError) as first:  # without a list: the first error, as before
        build(parse(text, str(path)), 53, Instance(str(path)))
    assert first.value.line == 3


def test_snippets_are_pasted():
    out = shape("(common) {\n errors\n log\n}\na.org {\n import common\n whoami\n}\nb.org {\n import common\n}")
    assert out == [(["a.org"], [("errors", [], None), ("log", [], None), ("whoami", [], None)]),
                   (["b.org"], [("errors", [], None), ("log", [], None)])]


def test_import_files_and_globs(tmp_path):
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "a.override").write_text("log\n")
    (tmp_path / "custom" / "b.override").write_text("errors\n")
    (tmp_path / "custom" / "extra.server").write_text("extra.org {\n whoami\n}\n")
    main = tmp_path / "Corefile"
    main.write_text(". {\n whoami\n import custom/*.override\n import custom/nothing-*.override\n}\nimport custom/*.server\n")
    out = [([str(k) for k in b.keys], [str(d.name) for d in b.directives]) for b in parse(main.read_text(), str(main))]
    assert out == [(["."], ["whoami", "log", "errors"]), (["extra.org"], ["whoami"])]
    imported = parse(main.read_text(), str(main))[0].directives[1]
    assert imported.file.endswith("a.override") and imported.line == 1
    assert sorted(os.path.basename(f) for f in files_of(str(main))) == ["Corefile", "a.override", "b.override", "extra.server"]


def test_import_cycle_is_an_error(tmp_path):
    (tmp_path / "a").write_text("import b\n")
    (tmp_path / "b").write_text("import a\n")
    main = tmp_path / "Corefile"
    main.write_text(". {\n import a\n}\n")
    with pytest.raises(CorefileError, match="import cycle"):
        parse(main.read_text(), str(main))


BROKEN = [
    ("unknown directive", ". {\n whoami\n frobnicate on\n}", 3, "unknown directive 'frobnicate'"),
    ("unbalanced open brace", ". {\n whoami\n", 1, "unbalanced braces"),
    ("stray close brace", ". {\n whoami\n}\n}", 4, "unexpected '}'"),
    ("unterminated quote", '. {\n log "abc\n}', 2, "unterminated quoted string"),
    ("missing import file", ". {\n import /nonexistent/pydns.conf\n}", 2, "no such file or snippet"),
    ("import without argument", ". {\n import\n}", 2, "import requires"),
    ("wrong argument count", ". {\n whoami extra\n}", 2, "takes no arguments"),
    ("duplicate zone and port", "a.org:53 {\n whoami\n}\na.org:53 {\n whoami\n}", 4, "already defined"),
    ("plugin used twice", ". {\n whoami\n whoami\n}", 3, "only be used once"),
    ("bad port", "a.org:99999 {\n whoami\n}", 1, "port 99999 out of range"),
    ("unsupported transport", "tls://a.org {\n whoami\n}", 1, "transport 'tls://' is not supported"),
    ("unknown option", ". {\n errors {\n  shout\n }\n}", 3, "unknown property 'shout'"),
    ("bad duration", ". {\n errors {\n  consolidate 5x .*\n }\n}", 3, "invalid duration '5x'"),
    ("second block without braces", "a.org {\n whoami\n}\nb.org\nwhoami", 4, "must be followed by '{'"),
    ("bad bind address", ". {\n bind 999.1.1.1\n}", 2, "not a valid IP address"),
    ("invalid zone", "a..b {\n whoami\n}", 1, "not a valid domain name"),
]


@pytest.mark.parametrize("name,text,line,message", BROKEN, ids=[b[0] for b in BROKEN])
def test_errors_name_file_and_line(name, text, line, message, tmp_path):
    path = tmp_path / "Corefile"
    path.write_text(text)
    with pytest.raises(CorefileError) as info:
        build(parse(text, str(path)), 53, Instance(str(path)))
    err = info.value
    assert err.file == str(path)
    assert err.line == line, str(err)
    assert message in str(err)
    assert str(err).startswith(f"{path}:{line}: ")


@pytest.mark.parametrize("key,zones,port", [
    (".", ["."], 53),
    ("example.org", ["example.org."], 53),
    ("Example.ORG.:1053", ["example.org."], 1053),
    ("dns://.:5300", ["."], 5300),
    ("10.0.0.0/8", ["10.in-addr.arpa."], 53),
    ("10.0.0.0/24:54", ["0.0.10.in-addr.arpa."], 54),
    ("10.1.0.0/23", ["0.1.10.in-addr.arpa.", "1.1.10.in-addr.arpa."], 53),
    ("fd00::/8", ["d.f.ip6.arpa."], 53),
])
def test_keys_normalise_like_coredns(key, zones, port):
    from pydns.corefile import Token

    keys = parse_key(Token(key, "Corefile", 1), 53)
    assert [k.zone for k in keys] == zones
    assert {k.port for k in keys} == {port}


def test_cidr_17_splits_into_128_zones():
    from pydns.corefile import Token

    keys = parse_key(Token("10.0.0.0/17", "Corefile", 1), 53)
    assert len(keys) == 128
    assert keys[0].zone == "0.0.10.in-addr.arpa." and keys[-1].zone == "127.0.10.in-addr.arpa."
