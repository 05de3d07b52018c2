"""The package's shape: which layer may import which, and what `import caffezoo` costs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import caffezoo

SRC = Path(caffezoo.__file__).parent


def imported_modules(path: Path, package: str) -> set[str]:
    """Every caffezoo module ``path`` imports, as absolute dotted names (lazy imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("caffezoo"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("caffezoo"):
                out.add(name)
    return out


def test_the_import_reader_sees_relative_and_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from ..zoo import x\ndef f():\n    from . import wire\n    import caffezoo.modeldir\n")
    assert imported_modules(f, "caffezoo.caffe") == {"caffezoo.zoo", "caffezoo.caffe", "caffezoo.modeldir"}


def test_the_caffe_format_layer_imports_nothing_outside_caffe_but_errors():
    outside = {
        f"{path.relative_to(SRC)}: {name}"
        for path in sorted((SRC / "caffe").rglob("*.py"))
        for name in imported_modules(path, ".".join(("caffezoo", *path.parent.relative_to(SRC).parts)))
        if not (name == "caffezoo.caffe" or name.startswith("caffezoo.caffe.")) and name != "caffezoo.errors"
    }
    assert outside == set()


def test_the_shared_leaves_import_almost_nothing():
    assert imported_modules(SRC / "errors.py", "caffezoo") == set()
    assert imported_modules(SRC / "atomic.py", "caffezoo") == {"caffezoo.caffe._files"}  # the writer's home


def test_import_caffezoo_loads_no_heavy_library():
    heavy = ["pydantic", "ruamel", "httpx", "numpy", "onnx", "typer", "google.protobuf"]
    code = f"import sys, caffezoo; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
