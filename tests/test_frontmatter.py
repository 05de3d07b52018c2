"""Front matter: found as Caffe finds it, loaded safely, edited without touching anything else."""

from __future__ import annotations

import os
import re
import stat

import pytest
import yaml  # PyYAML: what Caffe's own scripts parse front matter with
from hypothesis import given, settings
from hypothesis import strategies as st

from caffezoo.atomic import atomic_open, atomic_write_bytes
from caffezoo.errors import FrontMatterError, ModelDirError, WriteError
from caffezoo.frontmatter import (
    format_value,
    parse_readme,
    read_readme,
    set_keys,
    split_lines,
    write_keys,
)


def caffe_parse(text: str) -> dict:
    """Caffe's `parse_readme_frontmatter`: strip every line, first two '---', YAML in between."""
    lines = [line.strip() for line in re.split(r"\r\n|\r|\n", text)]  # text-mode readlines()
    top = lines.index("---")
    bottom = lines.index("---", top + 1)
    return yaml.safe_load("\n".join(lines[top + 1 : bottom]))


def test_block_found_like_caffe_with_prose_before_and_whitespace_and_crlf():
    text = "Intro line\r\n   ---  \r\nname: Net\r\nsha1: 0123\r\n---\r\nbody\r\n---\r\n"
    r = parse_readme(text)
    assert r.data == {"name": "Net", "sha1": "0123"}
    assert (r.start, r.end) == (2, 5)
    assert r.lines == {"name": 3, "sha1": 4}
    assert r.body == "body\r\n---\r\n"


def test_string_keys_keep_their_source_text():
    # YAML would read these as numbers; ids and hashes must keep every digit.
    r = parse_readme(
        "---\nsha1: 0000000000000000000000000000000000001234\ngist_id: 1234567\n"
        "caffe_version: 1.0\nsize: 12\n---\n"
    )
    assert r.data["sha1"] == "0000000000000000000000000000000000001234"
    assert r.data["gist_id"] == "1234567"
    assert r.data["caffe_version"] == "1.0"
    assert r.data["size"] == 12


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("no block at all\n", 1, "no front matter"),
        ("prose\n---\nname: x\n", 2, "never closed"),
        ("---\nname: [unclosed\n---\n", 3, "YAML syntax error"),
        ("---\nname: x\n  bad: indent\n---\n", 3, "YAML syntax error"),
        ("---\n- a\n- b\n---\n", 2, "expected a mapping"),
        ("---\njust a string\n---\n", 2, "expected a mapping"),
        ("---\nname: a\nname: b\n---\n", 3, "appears twice"),
        ("---\na: &x [1]\nb: *x\n---\n", 2, "anchors and aliases"),  # the anchor's line
        ("---\nname: !!binary aGVsbG8=\n---\n", 2, "not allowed"),
        ("---\nname: !custom x\n---\n", 2, "not allowed"),
        # YAML caps a plain key at 1024 characters; the plain reader must not read past the cap
        ("---\nname: x\n" + "k" * 1100 + ": v\n---\n", 3, "YAML syntax error"),
    ],
)
def test_bad_front_matter_names_the_line(text, line, fragment):
    with pytest.raises(FrontMatterError) as e:
        parse_readme(text, "m/readme.md")
    assert fragment in str(e.value)
    assert e.value.problems[0].line == line
    assert str(e.value).startswith(f"m/readme.md:{line}: ")


def test_unsafe_tag_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    text = f"---\nname: x\nevil: !!python/object/apply:os.system ['touch {marker}']\n---\n"
    with pytest.raises(FrontMatterError, match=r"readme.md:3: YAML tag '!!python/object/apply:os.system'"):
        parse_readme(text)
    assert not marker.exists()


def test_non_utf8_readme_is_a_clear_error(tmp_path):
    p = tmp_path / "readme.md"
    p.write_bytes(b"---\nname: caf\xe9\n---\n")
    with pytest.raises(FrontMatterError, match=r"readme.md:2: not UTF-8 text \(byte 0xe9"):
        read_readme(p)


def test_missing_and_directory_readme(tmp_path):
    with pytest.raises(ModelDirError, match="no such file"):
        read_readme(tmp_path / "readme.md")
    with pytest.raises(ModelDirError, match="is a directory"):
        read_readme(tmp_path)


ORIGINAL = (
    "# A title before the block\r\n"
    "---\r\n"
    'name: "My Net"   # the title\r\n'
    "caffemodel: my.caffemodel\r\n"
    "# a comment line\r\n"
    "mirrors:\r\n"
    "  - http://a.example/x\r\n"
    "sha1: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'\r\n"
    "custom_key: {kept: [1, 2]}\r\n"
    "---\r\n"
    "Prose with --- inside\r\n"
    "---\r\n"
)


def test_set_keys_changes_only_the_lines_of_the_keys():
    new = set_keys(ORIGINAL, {"sha1": "b" * 40, "gist_id": "034c6ac3865563b69e60"})
    old_lines, new_lines = split_lines(ORIGINAL), split_lines(new)
    assert new_lines[7] == "sha1: '" + "b" * 40 + "'\r\n"  # quoting style kept
    assert new_lines[9] == "gist_id: 034c6ac3865563b69e60\r\n"  # appended, CRLF like the file
    assert new_lines[:7] == old_lines[:7]
    assert new_lines[8] == old_lines[8]
    assert new_lines[10:] == old_lines[9:]


def test_set_keys_in_place_keeps_comment_and_double_quotes():
    new = set_keys(ORIGINAL, {"name": 'Other "net"'})
    assert split_lines(new)[2] == 'name: "Other \\"net\\""   # the title\r\n'
    assert parse_readme(new).data["name"] == 'Other "net"'


def test_set_keys_replaces_a_block_value_with_one_line_and_keeps_comments_around_it():
    new = set_keys(ORIGINAL, {"mirrors": ["http://b.example/y", "http://c.example/z"]})
    assert "mirrors: [http://b.example/y, http://c.example/z]\r\n" in new
    assert "# a comment line\r\n" in new
    assert parse_readme(new).data["custom_key"] == {"kept": [1, 2]}


def test_written_readme_parses_with_caffes_own_rule():
    new = set_keys(
        ORIGINAL,
        {"gist_id": "0123", "size": 233, "inputs": {"data": [10, 3, 227, 227]}, "tags": ["a", "b: c"]},
    )
    caffe = caffe_parse(new)
    ours = parse_readme(new).data
    for key in ("name", "caffemodel", "size", "inputs", "tags", "gist_id"):
        assert caffe[key] == ours[key], key


def test_empty_value_is_filled_in_place():
    text = "---\nname: x\nsha1:\nlicense: MIT\n---\n"
    assert set_keys(text, {"sha1": "c" * 40}) == f"---\nname: x\nsha1: {'c' * 40}\nlicense: MIT\n---\n"


def test_block_without_final_newline_before_closing_is_mended():
    text = "---\nname: x\n---"
    assert set_keys(text, {"gist_id": "g1"}) == "---\nname: x\ngist_id: g1\n---"


def test_set_keys_refuses_a_broken_block_and_changes_nothing(tmp_path):
    p = tmp_path / "readme.md"
    p.write_bytes(b"---\nname: [broken\n---\n")
    with pytest.raises(FrontMatterError):
        write_keys(p, {"gist_id": "x"})
    assert p.read_bytes() == b"---\nname: [broken\n---\n"
    assert [f.name for f in tmp_path.iterdir()] == ["readme.md"]  # no temp file left behind


def test_write_keys_is_atomic_and_keeps_mode_and_bom(tmp_path):
    p = tmp_path / "readme.md"
    p.write_bytes("\ufeff---\nname: x\n---\nbody\n".encode())
    os.chmod(p, 0o640)
    write_keys(p, {"gist_id": "abc"})
    assert p.read_bytes() == "\ufeff---\nname: x\ngist_id: abc\n---\nbody\n".encode()
    assert stat.S_IMODE(p.stat().st_mode) == 0o640


def test_atomic_writes_name_the_file_they_cannot_write_and_leave_nothing(tmp_path):
    with pytest.raises(WriteError, match=r"nowhere/readme.md: cannot write: No such file or directory"):
        atomic_write_bytes(tmp_path / "nowhere" / "readme.md", b"x")
    (tmp_path / "sub").mkdir()
    with pytest.raises(WriteError, match="sub: cannot write: Is a directory"):
        atomic_write_bytes(tmp_path / "sub", b"x")
    # An OSError about another file is the caller's own: it passes through as it is.
    with pytest.raises(FileNotFoundError), atomic_open(tmp_path / "out") as f:
        f.write(b"half")
        (tmp_path / "missing").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]


def test_a_new_file_gets_the_mode_open_would_give_it(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "readme.md", b"x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "readme.md").stat().st_mode) == 0o644


@pytest.mark.parametrize(
    "value, text",
    [
        ("plain", "plain"),
        ("0123", "'0123'"),
        ("true", "'true'"),
        ("a: b", "'a: b'"),
        ("", "''"),
        ("it's", '"it\'s"'),
        ("x #y", "'x #y'"),
        (12, "12"),
        (None, "null"),
        (True, "true"),
        ([1, "x"], "[1, x]"),
        ({"k": [1]}, "{k: [1]}"),
        ("line\nbreak", '"line\\nbreak"'),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text


scalars = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
    st.integers(-(10**12), 10**12),
    st.booleans(),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), scalars, max_size=3),
)


@settings(max_examples=int(os.environ.get("CAFFEZOO_FUZZ_EXAMPLES", "150")), deadline=None)
@given(value=values, prose=st.text(max_size=60))
def test_any_value_round_trips_and_prose_is_untouched(value, prose):
    prose = prose.replace("\r", "")
    text = "---\nname: Net\ncustom: 1\n---\n" + prose
    new = set_keys(text, {"custom": value, "extra": value})
    r = parse_readme(new)
    assert r.data["custom"] == value and r.data["extra"] == value
    assert new.endswith("---\n" + prose)
    caffe = caffe_parse(new)  # Caffe's own rule (PyYAML, YAML 1.1) reads the same values
    assert caffe["custom"] == value and caffe["extra"] == value


_tokens = st.sampled_from(
    [
        "net", "Net", "a b", "ILSVRC 2012", "http://x.org/a.caffemodel", "a: b", "a:", "a #c", "a#c",
        "Caffe's", "null", "Null", "NULL", "true", "True", "yes", "no", "on", "off", "y", "~", "0", "00",
        "0123", "17", "-3", "1e5", "1.5", ".inf", "2012-01-01", "9116a64c0fbe4459d18f4bb6b56d647b63920377",
        "0x1F", "1_000", '"quoted"', '"a, b"', "'single'", "'it''s'", '"back\\\\slash"', '"tab\\tx"',
        "[a, b]", "[104, 117, 123]", "[]", "[a,]", "[a: b]", "{a: 1}", "&anchor x", "*alias", "!!str x",
        "|", ">", "-", "- x", "a]", "[a", "x" * 70, "é", "a  b", "%x", "@x", "`x`", "[ a , b ]",
        "[{dataset: ILSVRC 2012 val, metric: top-1, value: 57.1}, {dataset: d, metric: top-5, value: 80}]",
        "[{a: 0.3916}]", "[{a: 1.50}]", "[{a: 00.5}]", "[{a: 1.}]", "[{a: -1.5}]", "[{a: 1e5}]", "[{a: 1, a: 2}]",
        "[{}]", "[{a: b},]", "[{a: b}, ]", "[{a: [1]}]", "[{a: null}]", "[{a: yes}]", "[{a:b}]", "[{a: b c}]",
        "[{a: b: c}]", "[{a: 'q'}]", "[{ a : 1 }]", "[{a: 1}]x", "[{a: 1} {b: 2}]", "[{a: .5}]", "[{a: 1.0e3}]",
        "[{a: 12345678901234567.5}]", "[{a: x #c}]", "[{true: 1}]", "[{a: ~}]",
    ]
)  # fmt: skip
_front_keys = st.sampled_from(
    ["name", "sha1", "caffe_commit", "size", "tags", "mean", "x-lab", "true", "null", "k", "k" * 1100]
)
_line = st.one_of(
    st.builds(lambda k, v, sp: f"{k}:{sp}{v}", _front_keys, _tokens, st.sampled_from([" ", "  ", ""])),
    st.builds(lambda k: f"{k}:", _front_keys),
    st.sampled_from(["", "# a comment", "  indented: x", "#é", "...", "%YAML 1.1", "key:value", "a : b"]),
)


@given(st.lists(_line, max_size=6), st.sampled_from(["\n", "\r\n"]))
@settings(max_examples=500, deadline=None)
def test_the_plain_reader_agrees_with_ruamel_wherever_it_answers(lines, newline):
    """Front matter of plain lines is read without ruamel.yaml; where that reader answers at all,
    it must answer what ruamel.yaml answers (values, types, key lines)."""
    from caffezoo import frontmatter

    text = "".join(line + newline for line in lines)
    fast = frontmatter._plain_mapping(text, 2)
    if fast is None:
        return
    try:
        original, frontmatter._plain_mapping = frontmatter._plain_mapping, lambda *a: None
        slow = frontmatter.load_yaml_mapping(text, "readme.md", 2)
    except FrontMatterError as e:
        raise AssertionError(f"the plain reader accepted what ruamel.yaml refuses: {e}") from None
    finally:
        frontmatter._plain_mapping = original
    assert fast == slow
    assert [type(v) for v in fast[0].values()] == [type(v) for v in slow[0].values()]


def test_bundled_readmes_take_the_plain_path():
    from caffezoo import frontmatter
    from caffezoo.zoo import BUNDLED_DIR, bundled_names

    for name in bundled_names():
        lines = split_lines((BUNDLED_DIR / name / "readme.md").read_text(encoding="utf-8"))
        end = lines.index("---\n", 1)
        assert frontmatter._plain_mapping("".join(lines[1:end]), 2) is not None, name
