"""The public API at the top of the package, and the one way results become JSON."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
from pathlib import Path
from typing import NamedTuple

import pytest
from download_helpers import blob, sha1, weights_model

import caffezoo
from caffezoo.errors import ModelNotFoundError

SRC = Path(caffezoo.__file__).parent


def test_download_validate_resolve_from_the_top(tmp_path):
    data = blob(4096, seed=3)
    served = tmp_path / "served.bin"
    served.write_bytes(data)
    model = weights_model(tmp_path / "net", served.as_uri(), data)
    fetched = caffezoo.download(model, allow_local=True)  # the file:// source is this test's own
    assert fetched.path == model / "net.caffemodel" and fetched.path.read_bytes() == data
    assert fetched.sha1 == sha1(data) and fetched.status == "downloaded"
    assert caffezoo.download(model, allow_local=True).status == "present"
    assert caffezoo.resolve(model).has_weights
    assert not [p for p in caffezoo.validate(model) if p.severity == "error"]
    # The modules stay importable and complete under the same names.
    import caffezoo.download as module

    assert module.download_many and caffezoo.download.download(model, allow_local=True).status == "present"


def test_validate_takes_a_bundled_name_and_reports_a_missing_one(tmp_path):
    problems = caffezoo.validate("bvlc_alexnet")
    assert [p.message for p in problems if p.severity == "error"] == []
    assert any("weights not downloaded yet" in p.message for p in problems)
    assert [p.message for p in caffezoo.validate(tmp_path / "nothing")] == ["no such directory"]


def test_locate_names_the_deploy_net_and_says_what_is_missing(tmp_path):
    where = caffezoo.locate("bvlc_googlenet")
    assert where.prototxt.name == "deploy.prototxt" and where.weights is None
    with pytest.raises(caffezoo.CaffezooError, match="the weights are not downloaded"):
        caffezoo.locate("bvlc_googlenet", need_weights=True)
    with pytest.raises(ModelNotFoundError, match="no such prototxt file"):
        caffezoo.locate(tmp_path / "gone.prototxt")
    with pytest.raises(ModelNotFoundError, match="not a bundled model"):
        caffezoo.locate("no_such_model")


def test_unknown_names_are_attribute_errors():
    with pytest.raises(AttributeError, match="no attribute 'dowload'"):
        caffezoo.dowload  # noqa: B018
    run_extra = {"classify", "load_net", "to_onnx"}  # public, but out of __all__ (star import)
    assert set(caffezoo.__all__) | run_extra <= set(dir(caffezoo))
    for name in [*caffezoo.__all__, *run_extra]:
        assert callable(getattr(caffezoo, name)), name


@dataclasses.dataclass
class Inner:
    where: Path
    tags: set[str]


class Pair(NamedTuple):
    left: int
    right: Inner


class Shaped:
    def to_json(self):
        return {"shape": (1, 2), "path": Path("x")}


def test_jsonable_turns_every_result_kind_into_plain_data():
    value = {"pair": Pair(1, Inner(Path("a/b"), {"z", "a"})), 3: Shaped(), "error": ValueError("bad")}
    assert caffezoo.jsonable(value) == {
        "pair": {"left": 1, "right": {"where": "a/b", "tags": ["a", "z"]}},
        "3": {"shape": [1, 2], "path": "x"},
        "error": "bad",
    }
    json.dumps(caffezoo.jsonable(value))  # plain enough for the json module without default=


def test_cli_json_is_jsonable_of_the_library_result(cli, tmp_path):
    from caffezoo.caffe.summary import inspect_net

    r = cli("inspect", "bvlc_alexnet", "--json")
    assert r.code == 0
    expected = caffezoo.jsonable(inspect_net(caffezoo.locate("bvlc_alexnet").prototxt))
    assert json.loads(r.stdout) == expected
    assert expected["totals"]["params"] == 60965224


def public_modules() -> list[Path]:
    return sorted(
        p
        for p in SRC.rglob("*.py")
        if not any(part.startswith("_") for part in p.relative_to(SRC).parts[:-1])
        and (not p.name.startswith("_") or p.name == "__init__.py")
        and p.name != "caffe_pb2.py"
    )


@pytest.mark.parametrize("path", public_modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_every_public_module_says_what_it_exports(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assigned = [n for n in tree.body if isinstance(n, ast.Assign) and "__all__" in ast.unparse(n.targets[0])]
    assert assigned, f"{path.relative_to(SRC)} has no __all__"
    relative = path.relative_to(SRC).with_suffix("")
    parts = (
        ("caffezoo", *relative.parts[:-1]) if relative.name == "__init__" else ("caffezoo", *relative.parts)
    )
    module = importlib.import_module(".".join(parts))
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def test_load_net_and_to_onnx_from_the_top(tmp_path):
    import numpy as np
    import onnx
    from test_runtime_session import model_dir

    d = model_dir(tmp_path)
    net = caffezoo.load_net(d)
    assert type(net).__name__ == "InferenceNet" and net.outputs == ["prob"]
    probs = net(data=np.ones((2, 3, 16, 16), np.float32))["prob"]
    assert probs.shape == (2, 4) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    out = caffezoo.to_onnx(d, tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert caffezoo.jsonable(net.inputs) == {"data": [None, 3, 16, 16]}


_BASE_INSTALL = "import sys\nfor m in ('onnx', 'onnxruntime', 'PIL'):\n    sys.modules[m] = None  # as without the run extra\n"


def test_star_import_is_cheap_and_works_without_the_run_extra():
    """`from caffezoo import *` imports every name of __all__: none of them may need the run extra."""
    import subprocess
    import sys

    heavy = ["onnx", "onnxruntime", "numpy", "pydantic", "httpx"]
    code = f"import sys\nfrom caffezoo import *\nprint([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = _BASE_INSTALL + "from caffezoo import *\nprint(callable(download), callable(validate))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["True", "True"], out.stderr


@pytest.mark.parametrize("name", ["load_net", "to_onnx", "classify"])
def test_a_name_that_needs_the_run_extra_says_so(name):
    import subprocess
    import sys

    code = _BASE_INSTALL + f"import caffezoo\ncaffezoo.{name}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ") and f"caffezoo.{name} needs the run extra" in last, last
    assert "pip install 'caffezoo[run]'" in last
    assert name in dir(caffezoo)
