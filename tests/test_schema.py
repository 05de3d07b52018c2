"""The front-matter schema: types, normalisation, and every bad key named at once."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caffezoo.errors import FrontMatterError
from caffezoo.schema import FrontMatter, missing_keys, require, validate_front_matter

SHA1 = "9116a64c0fbe4459d18f4bb6b56d647b63920377"


def test_seed_keys_and_extensions():
    fm = validate_front_matter(
        {
            "name": "Net",
            "caffemodel": "net.caffemodel",
            "caffemodel_url": "https://x.org/net.caffemodel",
            "sha1": SHA1.upper(),
            "caffe_commit": "709dc15",
            "gist_id": "abc",
            "license": "MIT",
            "sha256": "A" * 64,
            "size": 233,
            "mirrors": ["http://m1/x", "file:///srv/x"],
            "tags": "vision, imagenet",
            "inputs": {"data": [10, 3, 227, 227]},
            "mean": [104, 117, 123],
            "labels": "synsets.txt",
            "authors": "Ada",
        }
    )
    assert fm.sha1 == SHA1
    assert fm.sha256 == "a" * 64
    assert fm.tags == ["vision", "imagenet"]
    assert fm.authors == ["Ada"]
    assert fm.inputs == {"data": [10, 3, 227, 227]}
    assert fm.mean == [104.0, 117.0, 123.0]


def test_unknown_keys_are_kept():
    fm = validate_front_matter({"name": "Net", "x-lab-id": 7, "notes": {"a": 1}})
    assert fm.model_extra == {"x-lab-id": 7, "notes": {"a": 1}}
    assert fm.to_json() == {"name": "Net", "x-lab-id": 7, "notes": {"a": 1}}


def test_every_bad_key_is_named_at_once_with_its_line():
    data = {
        "sha1": "abc",
        "caffemodel": "../evil.caffemodel",
        "size": -1,
        "caffemodel_url": "dl.example.org/x",
        "mirrors": ["ssh://x"],
        "sha256": "zz",
    }
    lines = {"sha1": 2, "caffemodel": 3, "size": 4, "caffemodel_url": 5, "mirrors": 6, "sha256": 7}
    with pytest.raises(FrontMatterError) as e:
        validate_front_matter(data, "m/readme.md", lines)
    by_line = {p.line: p.message for p in e.value.problems}
    assert set(by_line) == {2, 3, 4, 5, 6, 7}
    assert "sha1: expected 40 hexadecimal digits" in by_line[2] and "'abc'" in by_line[2]
    assert "caffemodel: expected a plain file name" in by_line[3]
    assert "size: expected a number of bytes >= 0" in by_line[4]
    assert "caffemodel_url: expected an http://" in by_line[5]
    assert "mirrors" in by_line[6]
    assert "sha256: expected 64 hexadecimal digits" in by_line[7]
    assert str(e.value).splitlines()[0].startswith("m/readme.md:")


@pytest.mark.parametrize(
    "name", ["a/b.caffemodel", "a\\b.caffemodel", "..", ".", "x\0y", "CON", "nul.txt", "a\nb"]
)
def test_caffemodel_must_be_a_plain_file_name(name):
    with pytest.raises(FrontMatterError, match="caffemodel: "):
        validate_front_matter({"caffemodel": name})


@pytest.mark.parametrize(
    "sha1", ["9116a64c", SHA1 + "0", "g" * 40, "91 16a64c0fbe4459d18f4bb6b56d647b6392037"]
)
def test_sha1_must_be_40_hex_digits(sha1):
    with pytest.raises(FrontMatterError, match="sha1: expected 40 hexadecimal digits"):
        validate_front_matter({"sha1": sha1})


def test_wrong_types_are_named():
    with pytest.raises(FrontMatterError) as e:
        validate_front_matter({"size": "big", "tags": {"a": 1}, "inputs": [1, 2], "name": ["x"]})
    # Every bad key, each with what it should be (a bare `key in text` passed on any mention).
    messages = sorted(p.message for p in e.value.problems)
    assert [m.split(": ")[0] for m in messages] == ["inputs", "name", "size", "tags"]
    assert messages[0].startswith("inputs: input should be a valid dictionary, found [1, 2]")
    assert messages[1].startswith("name: input should be a valid string, found ['x']")
    assert messages[2].startswith("size: input should be a valid integer")
    assert messages[3].startswith("tags: input should be a valid list, found {'a': 1}")
    with pytest.raises(FrontMatterError, match="size: expected a number of bytes, found a boolean"):
        validate_front_matter({"size": True})


def test_empty_values_read_as_not_given():
    fm = validate_front_matter({"sha1": "", "caffemodel_url": None, "mirrors": None})
    assert fm.sha1 is None and fm.caffemodel_url is None and fm.mirrors == []


def test_required_keys_depend_on_the_action():
    fm = FrontMatter(caffemodel="x.caffemodel")
    assert missing_keys(fm, "download") == ["caffemodel_url", "sha1"]
    assert missing_keys(fm, "upload") == ["name"]
    with pytest.raises(FrontMatterError, match="download needs the keys caffemodel_url, sha1"):
        require(fm, "download", "m/readme.md")
    require(FrontMatter(name="N"), "upload")


# Values of the kinds YAML front matter holds, good and bad for each key.
_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(
        [
            "",
            "  ",
            "net.caffemodel",
            "../x",
            "a/b",
            "con.txt",
            "https://x.org/w.caffemodel",
            " http://m/x ",
            "ssh://x",
            "dl.example.org/x",
            SHA1,
            SHA1.upper(),
            " " + SHA1,
            "A" * 64,
            "zz",
            "vision, imagenet",
            "mean.binaryproto",
        ]
    ),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["data", "im_info"]), inner, max_size=2)
    ),
    max_leaves=6,
)
_keys = st.sampled_from([*FrontMatter.model_fields, "x-lab-id", "notes"])


@given(st.dictionaries(_keys, _values, max_size=8))
@settings(max_examples=400, deadline=None)
def test_the_fast_path_agrees_with_the_pydantic_model(data):
    """Where the plain checks accept a front matter, pydantic gives the same values; where they
    refuse one, pydantic decides (and validate_front_matter names its errors)."""
    from pydantic import ValidationError

    from caffezoo._front_matter_model import FrontMatterModel
    from caffezoo.schema import _plainly_valid

    fast = _plainly_valid(data)
    try:
        model = FrontMatterModel.model_validate(data)
    except ValidationError:
        assert fast is None
        with pytest.raises(FrontMatterError):
            validate_front_matter(data)
        return
    slow = FrontMatter.model_construct(
        **{k: getattr(model, k) for k in FrontMatter.model_fields}, **(model.model_extra or {})
    )
    assert validate_front_matter(data) == slow
    assert validate_front_matter(data).to_json() == model.model_dump(exclude_none=True, exclude_defaults=True)
    if fast is not None:
        assert FrontMatter.model_construct(**fast) == slow


def test_an_ordinary_readme_builds_no_pydantic_model():
    import subprocess
    import sys

    code = (
        "import sys; from caffezoo.zoo import resolve, list_models; list_models(); "
        "resolve('bvlc_alexnet').front_matter.to_json(); "
        "print([m for m in ('pydantic', 'caffezoo._front_matter_model') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_results_are_data():
    fm = validate_front_matter(
        {"results": [{"dataset": " ILSVRC 2012 val ", "metric": "top-1", "value": 57, "split": "val"}]}
    )
    assert fm.results == [{"dataset": "ILSVRC 2012 val", "metric": "top-1", "value": 57.0, "split": "val"}]
    assert validate_front_matter({"results": None}).results == []
    assert FrontMatter(name="n").results == []


@pytest.mark.parametrize(
    "results, expected",
    [
        ("top-1 57.1", "results: expected a list"),
        (["57.1"], r"results: \[0\]: expected a mapping"),
        ([{"dataset": "d", "metric": "top-1"}], r"results: \[0\]: missing value"),
        ([{"metric": "m", "value": 1}], r"results: \[0\]: missing dataset"),
        ([{"dataset": "d", "metric": "m", "value": "57%"}], r"results: \[0\]\.value: expected a number"),
        ([{"dataset": "d", "metric": "m", "value": True}], r"\[0\]\.value: expected a number"),
        ([{"dataset": "d", "metric": "m", "value": float("nan")}], r"\[0\]\.value: expected a number"),
        ([{"dataset": ["a"], "metric": "m", "value": 1}], r"\[0\]\.dataset: expected text"),
        ([{"dataset": "d", "metric": "m", "value": 1}] * 101, "at most 100"),
    ],
)
def test_bad_results_are_named(results, expected):
    with pytest.raises(FrontMatterError, match=expected):
        validate_front_matter({"name": "n", "results": results})


_result = st.fixed_dictionaries(
    {},
    optional={
        "dataset": st.sampled_from(["ILSVRC 2012 val", "", "  ", 2012, None, ["x"]]),
        "metric": st.sampled_from(["top-1", "mAP", 5, None, True]),
        "value": st.none()
        | st.booleans()
        | st.integers(-5, 100)
        | st.floats()
        | st.sampled_from(["57%", ""]),
        "split": st.sampled_from(["val", 1]),
    },
)


@given(st.none() | st.lists(_result | _values, max_size=3) | _values)
@settings(max_examples=300, deadline=None)
def test_the_fast_path_agrees_on_results(results):
    test_the_fast_path_agrees_with_the_pydantic_model.hypothesis.inner_test({"results": results})
