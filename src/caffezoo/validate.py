"""Check a model directory and report every problem at once.

>>> problems = validate("models/bvlc_alexnet")      # doctest: +SKIP
>>> [str(p) for p in problems if p.severity == "error"]   # doctest: +SKIP
[]

Errors make a directory unusable (no readme, bad front matter, a bad prototxt);
warnings point at what a user will miss (no license, weights not downloaded).
:data:`CHECKS` lists every check, in the order they run; the Caffe-format
checks of each prototxt file live with the Caffe reader (:mod:`caffezoo.caffe.checks`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ._api import callable_module
from .errors import CaffezooError, FrontMatterError, Problem
from .frontmatter import Readme, parse_readme, read_text
from .modeldir import PROTOTXT_KINDS, README, ModelDir, dir_problem, list_files, read_dir
from .schema import FrontMatter, validate_front_matter

__all__ = ["CHECKS", "Check", "has_errors", "validate", "validate_dir", "validate_model"]

Check = Callable[[ModelDir], Iterable[Problem]]


def _warn(path: Path | str, line: int | None, message: str) -> Problem:
    return Problem(str(path), line, message, "warning")


def _err(path: Path | str, line: int | None, message: str) -> Problem:
    return Problem(str(path), line, message, "error")


def check_front_matter(m: ModelDir) -> Iterable[Problem]:
    """What the seed's tools will miss: the keys of download, upload and provenance."""
    fm, rp, line = m.front_matter, m.readme_path, m.readme.line_of
    end = m.readme.end
    if not fm.license:
        yield _warn(rp, end, "no license: say under which terms the model may be used")
    if not (fm.caffe_commit or fm.caffe_version):
        yield _warn(rp, end, "no caffe_commit or caffe_version: say which Caffe trained the model")
    if not fm.name:
        yield _warn(rp, end, "no name: `caffezoo gist upload` needs it as the gist's description")
    clash = m.weights_clash() if fm.caffemodel else None
    if clash:
        yield _err(
            rp,
            line("caffemodel"),
            f"caffemodel: {fm.caffemodel!r} is one of the model's own files ({clash}); "
            "downloading the weights would replace it: name them something else",
        )
    elif fm.caffemodel:
        lacking = [k for k in ("caffemodel_url", "sha1") if not getattr(fm, k)]
        if lacking:
            yield _warn(
                rp,
                line("caffemodel"),
                f"caffemodel is set but {' and '.join(lacking)} "
                f"{'is' if len(lacking) == 1 else 'are'} not: the weights cannot be downloaded",
            )
        elif not m.has_weights:
            yield _warn(
                m.weights_path or rp,
                None,
                f"weights not downloaded yet: run `caffezoo download {m.name if m.bundled else m.path}`",
            )
    elif fm.caffemodel_url or fm.sha1:
        yield _warn(
            rp,
            line("caffemodel_url") or line("sha1"),
            "caffemodel_url/sha1 are set but caffemodel (the file name) is not",
        )
    for key in ("labels", "mean"):
        value = getattr(fm, key)
        found = m.labels_path if key == "labels" else m.path / str(value)
        if isinstance(value, str) and not (found and found.is_file()):
            yield _warn(rp, line(key), f"{key}: file {value!r} is not in the model directory")


def check_files(m: ModelDir) -> Iterable[Problem]:
    kinds = {f.kind for f in m.files}
    if not kinds.intersection(PROTOTXT_KINDS):
        yield _warn(m.path, None, "no .prototxt file: a model needs at least its deploy net")
    for f in m.files:
        if f.kind == "directory":
            yield _warn(
                m.path / f.name, None, "subfolders are not part of the model info (a gist cannot hold them)"
            )
        elif not (m.path / f.name).exists():
            yield _warn(m.path / f.name, None, "a symbolic link to nothing: its target is missing")


def check_caffe_compat(m: ModelDir) -> Iterable[Problem]:
    """Caffe's script strips every line before parsing; nested block YAML changes meaning then."""
    from .frontmatter import _plain_mapping, _yaml, split_lines

    lines = split_lines(m.readme.text)[m.readme.start : m.readme.end - 1]
    if _plain_mapping("".join(lines), 1) is not None:
        return  # one plain `key: value` per line, none indented: stripping changes nothing
    try:
        stripped = _yaml("safe").load("\n".join(line.strip() for line in lines))
        ours = _yaml("safe").load("".join(lines))
    except Exception:
        stripped, ours = None, {}
    if stripped != ours:
        yield _warn(
            m.readme_path,
            m.readme.start,
            "Caffe's own scripts strip indentation and would read this front matter "
            "differently: write nested values on one line, e.g. `inputs: {data: [1, 3, 224, 224]}`",
        )


def check_prototxts(m: ModelDir) -> Iterable[Problem]:
    """Every problem of every prototxt file in the model directory, as Caffe would see it.

    A file that passed before, byte for byte, is not checked again (see :mod:`._known_clean`):
    protobuf costs start-up time that a model checked before does not need.
    """
    prototxts = [f for f in m.files if f.kind in PROTOTXT_KINDS]
    if not prototxts:
        return
    from ._known_clean import KnownClean

    clean = KnownClean.here()
    for f in prototxts:
        path = m.path / f.name
        how = f.kind if f.kind in ("deploy", "solver") else "net"
        data = m.data(f.name) or _small_file(path, f.size)
        if data is not None and clean.has(how, data, m.path):
            continue
        from .caffe.checks import check_net_file, check_solver_file, solver_net_names

        if how == "solver":
            problems = list(check_solver_file(path, m.path, data))
        else:
            problems = list(check_net_file(path, deploy=how == "deploy", data=data))
        if not problems and data is not None:
            clean.add(how, data, solver_net_names(path, data) if how == "solver" else ())
        yield from problems


def _small_file(path: Path, size: int, most: int = 16 << 20) -> bytes | None:
    """The bytes of a file of at most ``most`` bytes; None otherwise or when it cannot be read
    (the check then reads it itself and says why)."""
    if size > most:
        return None
    from .caffe._files import read_regular

    try:
        data = read_regular(path, most)
    except OSError:
        return None
    return data if len(data) <= most else None


# Checks run on every directory that has a readable readme, in this order.
CHECKS: list[Check] = [check_front_matter, check_files, check_caffe_compat, check_prototxts]


def validate(
    path: str | os.PathLike[str], *, weights_dir: Path | None = None, bundled: bool = False
) -> list[Problem]:
    """Every problem of the model directory at ``path``, errors and warnings, in file order.

    ``weights_dir`` says where the weights live when not in the directory itself
    (bundled models keep theirs under ``CAFFEZOO_HOME``).
    """
    return validate_dir(path, weights_dir=weights_dir, bundled=bundled)[1]


def validate_dir(
    path: str | os.PathLike[str],
    *,
    weights_dir: Path | None = None,
    bundled: bool = False,
    whole_up_to: int | None = None,
) -> tuple[ModelDir | None, list[Problem]]:
    """:func:`validate`, and the directory as it read it: loaded in full when no problem is an
    error (None when there was no directory to list).

    With ``whole_up_to``, the files of at most that many bytes are read once, whole, and kept in
    ``ModelDir.entries`` (see :func:`~caffezoo.modeldir.read_dir`): a caller that
    needs their bytes too, as ``gist upload`` does, does not read them again.

    >>> model, problems = validate_dir("models/my_net")          # doctest: +SKIP
    """
    p = Path(path)
    problem = dir_problem(p)
    if problem is not None:
        return None, [_err(p, None, problem)]
    try:
        entries = read_dir(p, whole_up_to=whole_up_to)
        files = list_files(p, entries)
    except OSError as e:
        return None, [_err(p, None, f"cannot list the directory: {e.strerror}")]
    if not files:
        return None, [_err(p, None, "the directory is empty: expected a readme.md and prototxt files")]

    problems: list[Problem] = []
    readme_path = p / README
    readme: Readme | None = None
    fm = FrontMatter()
    if not readme_path.is_file():
        other = [f.name for f in files if f.name.lower() == README]
        hint = f" ({other[0]!r} found; Caffe's scripts need the lower-case name)" if other else ""
        problems.append(_err(readme_path, None, f"no readme.md{hint}"))
    else:
        try:
            text = read_text(readme_path, data=next((e.data for e in entries if e.name == README), None))
            readme = parse_readme(text, readme_path)
            if text.startswith("\ufeff"):
                problems.append(
                    _warn(
                        readme_path,
                        1,
                        "starts with a byte-order mark, which Caffe's "
                        "scripts do not expect before the first '---'",
                    )
                )
            fm = validate_front_matter(readme.data, str(readme_path), readme.lines)
        except FrontMatterError as e:
            problems.extend(e.problems)
        except CaffezooError as e:
            problems.append(_err(readme_path, None, str(e)))

    m = ModelDir(
        path=p,
        readme=readme or Readme(str(readme_path), "", {}, 0, 0),
        front_matter=fm,
        files=files,
        weights_dir=weights_dir,
        bundled=bundled,
        entries=entries,
    )
    fm_ok = readme is not None and not any(x.severity == "error" for x in problems)
    for check in CHECKS:
        if not fm_ok and check in (check_front_matter, check_caffe_compat):
            continue
        try:
            problems.extend(check(m))
        except CaffezooError as e:  # a check that cannot run says why, and the others still run
            problems.append(_err(p, None, str(e)))
    return m, problems


def validate_model(model: str | os.PathLike[str]) -> list[Problem]:
    """Like :func:`validate`, but MODEL may also be a bundled model's name."""
    from .zoo import find

    found = find(model)
    if found is None:  # not a path nor a bundled name: validate says what is missing there
        return validate(os.fspath(model))
    return validate(found.path, weights_dir=found.weights_dir, bundled=found.bundled)


def has_errors(problems: Iterable[Problem]) -> bool:
    return any(p.severity == "error" for p in problems)


callable_module(__name__, validate_model)  # caffezoo.validate("bvlc_alexnet") takes a MODEL, like the CLI
