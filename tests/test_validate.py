"""`caffezoo validate`: every problem at once, errors apart from warnings, JSON for machines."""

from __future__ import annotations

import json
import os

import pytest
from model_helpers import DEPLOY, GOOD_FRONT_MATTER, write_model

from caffezoo.validate import has_errors, validate, validate_model
from caffezoo.zoo import bundled_names


def test_good_directory_has_only_the_weights_warning(tmp_path):
    m = write_model(tmp_path / "net", GOOD_FRONT_MATTER, files={"deploy.prototxt": DEPLOY})
    problems = validate(m)
    assert [(p.severity, p.message.split(":")[0]) for p in problems] == [
        ("warning", "weights not downloaded yet")
    ]
    (m / "test_net.caffemodel").write_bytes(b"x")
    assert validate(m) == []


def test_all_front_matter_errors_reported_at_once(tmp_path):
    m = write_model(tmp_path / "net", "name: x\nsha1: nothex\ncaffemodel: a/b\nsize: -3\n")
    problems = validate(m)
    errors = [p for p in problems if p.severity == "error"]
    assert [(p.line, p.message.split(":")[0]) for p in errors] == [
        (3, "sha1"),
        (4, "caffemodel"),
        (5, "size"),
    ]
    assert all(p.path == str(m / "readme.md") for p in errors)
    assert has_errors(problems)


def test_warnings_for_what_users_will_miss(tmp_path):
    m = write_model(tmp_path / "net", "caffemodel: n.caffemodel\nlabels: labels.txt\n")
    (m / "sub").mkdir()
    messages = [p.message for p in validate(m)]
    assert not has_errors(validate(m))
    expected = [
        "no license",
        "no caffe_commit or caffe_version",
        "no name",
        "caffemodel is set but caffemodel_url and sha1 are not",
        "labels: file 'labels.txt' is not in the model directory",
        "no .prototxt file",
        "subfolders are not part of the model info",
    ]
    for fragment in expected:
        assert any(fragment in msg for msg in messages), fragment


def test_a_symbolic_link_to_nothing_is_a_warning_not_a_crash(tmp_path, cli):
    m = write_model(tmp_path / "net", GOOD_FRONT_MATTER, files={"deploy.prototxt": DEPLOY})
    (m / "test_net.caffemodel").symlink_to(tmp_path / "gone.caffemodel")
    (m / "notes.txt").symlink_to(tmp_path / "gone.txt")
    assert [(p.severity, p.path, p.message) for p in validate(m) if p.message.startswith("a symbolic")] == [
        ("warning", str(m / "notes.txt"), "a symbolic link to nothing: its target is missing"),
        ("warning", str(m / "test_net.caffemodel"), "a symbolic link to nothing: its target is missing"),
    ]
    r = cli("show", "--json", m)
    assert r.code == 0, r.stderr
    files = {f["name"]: (f["kind"], f["size"]) for f in json.loads(r.stdout)["files"]}
    assert files["test_net.caffemodel"] == ("weights", 0) and files["notes.txt"] == ("binary", 0)


def test_a_byte_order_mark_is_a_warning(tmp_path):
    m = write_model(tmp_path / "net", GOOD_FRONT_MATTER, files={"deploy.prototxt": DEPLOY})
    (m / "readme.md").write_bytes(b"\xef\xbb\xbf" + (m / "readme.md").read_bytes())
    problems = validate(m)
    assert not has_errors(problems)
    assert [(p.line, p.message.split(",")[0]) for p in problems if p.path == str(m / "readme.md")] == [
        (1, "starts with a byte-order mark")
    ]


def test_nested_block_yaml_warns_that_caffe_reads_it_differently(tmp_path):
    m = write_model(
        tmp_path / "net",
        GOOD_FRONT_MATTER + "inputs:\n  data: [1, 3, 8, 8]\n",
        files={"deploy.prototxt": DEPLOY},
    )
    assert any("Caffe's own scripts strip indentation" in p.message for p in validate(m))
    m2 = write_model(
        tmp_path / "net2",
        GOOD_FRONT_MATTER + "inputs: {data: [1, 3, 8, 8]}\n",
        files={"deploy.prototxt": DEPLOY},
    )
    assert not any("strip indentation" in p.message for p in validate(m2))


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: None, "no such directory"),
        (lambda p: p.write_text("x"), "is a file"),
        (lambda p: p.mkdir(), "the directory is empty"),
        (lambda p: (p.mkdir(), (p / "deploy.prototxt").write_text(DEPLOY)), "no readme.md"),
        (lambda p: (p.mkdir(), (p / "readme.md").write_text("no front matter")), "no front matter"),
        (lambda p: (p.mkdir(), (p / "readme.md").write_text("---\nname: x\n")), "never closed"),
        (lambda p: (p.mkdir(), (p / "readme.md").write_bytes(b"---\nname: \xff\n---\n")), "not UTF-8"),
        (lambda p: (p.mkdir(), (p / "readme.md").write_text("---\n[1, 2]\n---\n")), "expected a mapping"),
    ],
)
def test_unusable_directories_are_errors(tmp_path, make, fragment):
    p = tmp_path / "m"
    make(p)
    problems = validate(p)
    assert has_errors(problems)
    assert any(fragment in pr.message for pr in problems)


def test_validate_changes_nothing(tmp_path):
    m = write_model(tmp_path / "net", "name: x\nsha1: bad\n", files={"deploy.prototxt": DEPLOY})
    before = {f.name: f.read_bytes() for f in m.iterdir()}
    validate(m)
    assert {f.name: f.read_bytes() for f in m.iterdir()} == before


@pytest.mark.parametrize("name", bundled_names())
def test_bundled_models_validate_without_errors(name):
    problems = validate_model(name)
    assert not has_errors(problems), [str(p) for p in problems]


def test_cli_exit_codes_and_output(tmp_path, cli):
    good = write_model(tmp_path / "good", GOOD_FRONT_MATTER, files={"deploy.prototxt": DEPLOY})
    bad = write_model(tmp_path / "bad", "name: x\nsha1: 123\n")
    r = cli("validate", good)
    assert r.code == 0 and "ok: 0 errors, 1 warning in 1 directory" in r.stdout
    r = cli("validate", good, bad)
    assert r.code == 1
    assert f"{bad / 'readme.md'}:3: error: sha1: expected 40 hexadecimal digits" in r.stdout
    assert "failed: 1 error" in r.stdout
    r = cli("validate", "--strict", good)
    assert r.code == 1
    r = cli("validate", "--quiet", good, bad)
    assert r.code == 1 and "warning" not in r.stdout and "sha1" in r.stdout


def test_cli_json(tmp_path, cli):
    bad = write_model(tmp_path / "bad", "name: x\nsha1: 123\n")
    r = cli("validate", "--json", bad, "bvlc_alexnet")
    assert r.code == 1
    data = json.loads(r.stdout)
    assert [d["ok"] for d in data] == [False, True]
    assert data[0]["problems"][0] == {
        "path": str(bad / "readme.md"),
        "line": 3,
        "severity": "error",
        "message": "sha1: expected 40 hexadecimal digits (the output of `sha1sum`), found '123'",
    }
    assert (
        "weights not downloaded yet: run `caffezoo download bvlc_alexnet`"
        in data[1]["problems"][0]["message"]
    )


def test_cli_names_a_bad_result_with_its_line(tmp_path, cli):
    good = write_model(
        tmp_path / "good",
        GOOD_FRONT_MATTER + "results: [{dataset: ILSVRC 2012 val, metric: top-1, value: 57.1}]\n",
        files={"deploy.prototxt": DEPLOY},
    )
    assert cli("validate", good).code == 0
    bad = write_model(
        tmp_path / "bad", "name: x\nresults: [{dataset: ILSVRC 2012 val, metric: top-1, value: 57%}]\n"
    )
    r = cli("validate", bad)
    assert r.code == 1
    assert f"{bad / 'readme.md'}:3: error: results: [0].value: expected a number" in r.stdout


def test_bundled_cards_report_their_results():
    from caffezoo.zoo import resolve

    results = {n: resolve(n).front_matter.results for n in bundled_names()}
    assert {(r["metric"], r["value"]) for r in results["bvlc_alexnet"]} == {("top-1", 57.1), ("top-5", 80.2)}
    assert {(r["metric"], r["value"]) for r in results["bvlc_googlenet"]} == {
        ("top-1", 68.7),
        ("top-5", 88.9),
    }
    assert results["finetune_flickr_style"] == [
        {"dataset": "Flickr Style val", "metric": "accuracy", "value": 0.3916}
    ]
    assert results["bvlc_reference_rcnn_ilsvrc13"] == []  # no figure was reported


def test_prototxts_that_passed_are_not_checked_again_until_they_change(tmp_path):
    """A second validate of the same bytes needs no protobuf (the start-up cost of `caffezoo validate`);
    a changed file, or a solver whose net went missing, is checked again, with the same problems
    a first check finds."""
    import shutil
    import subprocess
    import sys

    from caffezoo.zoo import BUNDLED_DIR

    model = tmp_path / "alexnet"
    shutil.copytree(BUNDLED_DIR / "bvlc_alexnet", model)
    code = (
        "import sys, json\nfrom caffezoo.validate import validate\n"
        f"problems = [str(p) for p in validate({str(model)!r})]\n"
        "print(json.dumps([problems, 'google.protobuf' in sys.modules]))"
    )

    def run(home: str = "") -> tuple[list[str], bool]:
        env = {**os.environ, "CAFFEZOO_HOME": home} if home else None
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        )
        problems, parsed = json.loads(out.stdout)
        return problems, parsed

    first = run()
    assert first[1] and not [p for p in first[0] if "error" in p]
    assert run() == (first[0], False)  # known clean: no protobuf at all
    deploy = (model / "deploy.prototxt").read_text()
    (model / "deploy.prototxt").write_text(deploy.replace('bottom: "pool5"', 'bottom: "pool9"'))
    changed = run()
    assert changed[1] and any("pool9" in p for p in changed[0])
    assert run() == changed  # problems are said every time
    (model / "deploy.prototxt").write_text(deploy)
    (model / "train_val.prototxt").unlink()  # the solver names it
    gone = run()
    assert any("train_val.prototxt' is not in the model directory" in p for p in gone[0]), gone
    assert gone[0] == run(str(tmp_path / "fresh-home"))[0]  # as a first check says


def test_a_bad_setting_does_not_change_what_validate_says(tmp_path, monkeypatch):
    """The records of clean prototxts live under the cache folder the settings name; a setting
    validate does not use (CAFFEZOO_OFFLINE=maybe) costs the records, not a false error, and
    the prototxts are still checked."""
    m = write_model(tmp_path / "net", GOOD_FRONT_MATTER, files={"deploy.prototxt": DEPLOY})
    bad = write_model(tmp_path / "bad", GOOD_FRONT_MATTER, files={"deploy.prototxt": DEPLOY + "nonsense\n"})
    monkeypatch.setenv("CAFFEZOO_OFFLINE", "maybe")
    assert [p.message.split(":")[0] for p in validate(m)] == ["weights not downloaded yet"]
    assert any("nonsense" in p.message for p in validate(bad) if p.path.endswith("deploy.prototxt"))


def test_clean_prototxt_records_follow_the_checking_code_and_old_ones_go(tmp_path):
    """The records are keyed by the code that decides what a check finds, validate.py's
    check_prototxts included (it picks how each file is checked); without its sources there
    is no key and no record; records of other code are removed when the first of this code's
    is written, so the folder does not grow with every upgrade or edit."""
    from caffezoo._known_clean import KnownClean, _code_key

    pkg = tmp_path / "pkg"
    (pkg / "caffe").mkdir(parents=True)
    for name in ("caffe/checks.py", "_known_clean.py", "validate.py"):
        (pkg / name).write_text("x = 1\n")
    key = _code_key(pkg)
    os.utime(pkg / "validate.py", ns=(1, 1))
    assert _code_key(pkg) not in (None, key)
    (pkg / "validate.py").unlink()
    assert _code_key(pkg) is None

    cache = tmp_path / "cache"
    stale = cache / "clean-prototxts" / "0123456789abcdef"
    stale.mkdir(parents=True)
    (stale / ("0" * 40)).write_text("[]")
    clean = KnownClean(cache)
    clean.add("net", b"layer {}")
    assert clean.has("net", b"layer {}", tmp_path)
    assert [p.name for p in (cache / "clean-prototxts").iterdir()] == [clean.dir.name]


@pytest.mark.parametrize("left", [b"", b"\0" * 24, b'["train_val.pro'])
def test_a_record_a_crash_left_torn_reads_as_not_checked(tmp_path, left):
    """Records are written without fsync (a first validate would pay milliseconds for each):
    what a crash can leave of one (nothing, zeros, a part) must read as "check it again"."""
    from caffezoo._known_clean import KnownClean

    (tmp_path / "train_val.prototxt").write_text("layer {}\n")
    clean = KnownClean(tmp_path / "cache")
    clean.add("solver", b'net: "train_val.prototxt"\n', ["train_val.prototxt"])
    assert clean.has("solver", b'net: "train_val.prototxt"\n', tmp_path)
    (record,) = clean.dir.iterdir()
    record.write_bytes(left)
    assert not clean.has("solver", b'net: "train_val.prototxt"\n', tmp_path)
