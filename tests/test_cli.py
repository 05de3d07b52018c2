"""The command line as a user meets it: help, list, show, new, and errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from model_helpers import GOOD_FRONT_MATTER, write_model

from caffezoo.validate import validate


def test_help_lists_the_commands(cli_process):
    r = cli_process("--help")
    assert r.code == 0
    listed = {line.split()[0] for line in r.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert {"list", "show", "new", "validate", "inspect", "upgrade", "draw"} <= listed
    assert "--strict" in cli_process("validate", "--help").stdout


def test_no_arguments_shows_help(cli_process):
    r = cli_process()
    assert r.code != 0 or "Usage" in r.stdout
    assert "Usage" in r.stdout + r.stderr


def test_version(cli):
    r = cli("--version")
    assert r.code == 0 and r.stdout.startswith("caffezoo ")


def test_list_table_and_json(cli, caffezoo_home):
    r = cli("list")
    assert r.code == 0
    assert "bvlc_alexnet" in r.stdout and "BAIR/BVLC AlexNet Model" in r.stdout
    data = json.loads(cli("list", "--json").stdout)
    assert [m["name"] for m in data][:2] == ["bvlc_alexnet", "bvlc_googlenet"]
    assert all(m["weights_present"] is False for m in data)
    weights = caffezoo_home / "models" / "bvlc_alexnet" / "bvlc_alexnet.caffemodel"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"x")
    data = json.loads(cli("list", "--json").stdout)
    assert data[0]["weights_present"] is True and data[0]["weights_path"] == str(weights)


def test_show_bundled_and_directory(cli, tmp_path):
    r = cli("show", "finetune_flickr_style")
    assert r.code == 0
    assert "034c6ac3865563b69e60" in r.stdout and "non-commercial" in r.stdout
    m = write_model(tmp_path / "net", GOOD_FRONT_MATTER, files={"deploy.prototxt": "input: 'data'\n"})
    data = json.loads(cli("show", "--json", m).stdout)
    assert data["front_matter"]["sha1"] == "9116a64c0fbe4459d18f4bb6b56d647b63920377"
    assert {"name": "deploy.prototxt", "kind": "deploy", "size": 14} in data["files"]
    assert data["weights_path"] == str(m / "test_net.caffemodel")


def test_text_from_the_readme_and_paths_is_printed_as_it_is(cli, tmp_path):
    # Square brackets are rich markup: unescaped, `[/x]` crashed `show` and `[bold]` vanished.
    m = write_model(tmp_path / "m[/x]", 'name: "[/x] net"\nlicense: "[bold]MIT"\n')
    r = cli("show", m)
    assert r.code == 0, r.stderr
    assert "[/x] net" in r.stdout and "license: [bold]MIT" in r.stdout and f"({m})" in r.stdout
    r = cli("new", tmp_path / "n[/y]", "--name", "N")
    assert r.code == 0 and f"created {tmp_path / 'n[/y]' / 'readme.md'};" in r.stdout


def test_new_scaffolds_a_directory_that_validates(cli, tmp_path):
    target = tmp_path / "my_net"
    r = cli("new", target, "--name", "My: Net", "--license", "CC-BY-4.0")
    assert r.code == 0, r.stderr
    problems = validate(target)
    assert not [p for p in problems if p.severity == "error"]
    readme = (target / "readme.md").read_text()
    for section in ("## Training data", "## Results", "## License"):
        assert section in readme
    from caffezoo.modeldir import load

    fm = load(target).front_matter
    assert fm.name == "My: Net" and fm.caffemodel == "my_net.caffemodel" and fm.license == "CC-BY-4.0"


def test_new_with_weights_info_and_refusals(cli, tmp_path):
    target = tmp_path / "w"
    r = cli("new", target, "--name", "W", "--url", "https://example.org/w.caffemodel", "--sha1", "A" * 40)
    assert r.code == 0
    from caffezoo.modeldir import load

    fm = load(target).front_matter
    assert fm.caffemodel_url == "https://example.org/w.caffemodel" and fm.sha1 == "a" * 40
    before = (target / "readme.md").read_bytes()
    r = cli("new", target, "--name", "Again")
    assert r.code == 1 and "already exists" in r.stderr
    assert (target / "readme.md").read_bytes() == before
    r = cli("new", tmp_path / "x", "--name", "X", "--caffemodel", "../x.caffemodel")
    assert r.code == 2 and "--caffemodel" in r.stderr and not (tmp_path / "x").exists()
    r = cli("new", tmp_path / "y", "--name", "Y", "--sha1", "nothex")
    assert r.code == 2 and "--sha1" in r.stderr and not (tmp_path / "y").exists()


def test_new_where_no_directory_can_be_made_is_one_line(cli_process, tmp_path):
    (tmp_path / "afile").write_text("x")
    r = cli_process("new", tmp_path / "afile" / "m", "--name", "M")
    assert r.code == 1
    assert r.stderr == f"error: {tmp_path / 'afile' / 'm'}: cannot create the directory: Not a directory\n"


def test_errors_are_one_line_without_traceback(cli_process, tmp_path):
    r = cli_process("show", tmp_path / "missing")
    assert r.code == 1
    assert r.stderr.strip() == f"error: {tmp_path / 'missing'}: no such directory"
    assert "Traceback" not in r.stderr
    bad = write_model(tmp_path / "bad", "name: x\nevil: !!python/object/apply:os.system ['echo pwned']\n")
    r = cli_process("show", bad)
    assert r.code == 1 and "Traceback" not in r.stderr and "pwned" not in r.stdout
    assert f"{bad / 'readme.md'}:3: YAML tag" in r.stderr


def test_debug_shows_the_traceback(cli_process, tmp_path):
    r = cli_process("--debug", "show", tmp_path / "missing")
    assert r.code == 1 and "Traceback" in r.stderr and "ModelDirError" in r.stderr


def test_bad_environment_is_a_clear_error(cli_process):
    r = cli_process("list", env={"CAFFEZOO_OFFLINE": "maybe"})
    assert r.code == 1
    assert "CAFFEZOO_OFFLINE='maybe': expected 1/0" in r.stderr


def test_the_kept_help_is_what_the_full_command_tree_prints(cli, monkeypatch):
    """`caffezoo --help` prints cli._help.TOP_LEVEL without building the tree: it must not drift."""
    from caffezoo.cli._help import TOP_LEVEL, render

    monkeypatch.setenv("COLUMNS", "80")
    assert render() == TOP_LEVEL, "run `python -m caffezoo.cli._help` to update the kept help text"
    assert cli("--help").stdout == TOP_LEVEL == cli("-h").stdout
    monkeypatch.setenv("COLUMNS", "200")  # click formats 78 columns wide on any terminal this wide
    assert cli("--help").stdout == TOP_LEVEL


def test_a_narrow_terminal_gets_the_help_click_formats_for_it(cli, monkeypatch):
    from caffezoo.cli._help import TOP_LEVEL

    monkeypatch.setenv("COLUMNS", "60")
    r = cli("--help")
    assert r.code == 0 and r.stdout != TOP_LEVEL and r.stdout.startswith("Usage: caffezoo [OPTIONS]")
    assert max(len(line) for line in r.stdout.splitlines()) <= 60


def test_the_command_table_names_every_command_and_its_module():
    import typer.main

    from caffezoo.cli import COMMANDS, MODULES, load_commands

    assert set(typer.main.get_command(load_commands()).commands) == set(COMMANDS)
    for module in MODULES:
        code = (
            "import sys, typer.main; from caffezoo.cli import load_commands; "
            f"print(' '.join(typer.main.get_command(load_commands(({module!r},))).commands))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert {name for name, m in COMMANDS.items() if m == module} <= set(out.split()), module


@pytest.mark.parametrize(
    ("args", "modules"),
    [
        (["show", "bvlc_alexnet"], ["_app", "_output", "_quick", "zoo"]),  # _quick: the dispatcher
        (["validate", "bvlc_alexnet"], ["_output", "_quick"]),  # no Typer at all
    ],
)
def test_a_command_loads_only_its_own_module(caffezoo_home, args, modules):
    code = (
        "import sys; from caffezoo.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit as e:\n    code = e.code\n"
        "print(code, sorted(m for m in sys.modules if m.startswith('caffezoo.cli.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == f"0 {['caffezoo.cli.' + m for m in modules]}"


@pytest.mark.parametrize("command", ["validate", "download"])
def test_the_quick_commands_know_the_switches_and_defaults_typer_declares(command):
    """cli._quick parses validate and download without Typer: its table must not drift from them."""
    import inspect

    import typer.main

    from caffezoo.cli import load_commands
    from caffezoo.cli._quick import QUICK

    declared = typer.main.get_command(load_commands()).commands[command]
    quick = QUICK[command]
    switches = {
        name: p.name
        for p in declared.params
        if p.param_type_name == "option" and p.is_flag
        for name in p.opts
    }
    assert quick.switches == switches
    assert [p.name for p in declared.params if p.param_type_name == "argument"] == [quick.arguments]
    body = inspect.signature(quick.run).parameters
    assert {p.name: p.default for p in declared.params if p.param_type_name == "option"} == {
        name: q.default for name, q in body.items() if name != quick.arguments
    }


def _problem_model(root):
    """A model directory with one error and one warning in it."""
    d = write_model(root / "bad", GOOD_FRONT_MATTER.replace("license: BSD-2-Clause", "license: ''"))
    (d / "deploy.prototxt").write_text('name: "x"\nlayer { name: "a" type: "NoSuchLayer" }\n')
    return d


@pytest.mark.parametrize(
    "switches", [[], ["-q"], ["--quiet", "--strict"], ["--json"], ["--strict", "--json"]]
)
def test_validate_prints_the_same_whether_typer_parses_or_not(cli_process, tmp_path, switches):
    bad = _problem_model(tmp_path)
    words = [str(bad), "bvlc_alexnet"]
    quick = cli_process("validate", *switches, *words)
    typer_parsed = cli_process("validate", *switches, "--", *words)  # `--`: the quick path steps aside
    assert quick == typer_parsed
    assert quick.code == 1 and "NoSuchLayer" in quick.stdout and "Traceback" not in quick.stderr


def test_download_prints_the_same_whether_typer_parses_or_not(cli_process, tmp_path, caffezoo_home):
    from download_helpers import blob, weights_model

    data = blob(1000, seed=6)
    (tmp_path / "w.bin").write_bytes(data)
    model = weights_model(tmp_path / "net", (tmp_path / "w.bin").as_uri(), data)
    first = cli_process("download", "--allow-local", model)
    assert first.code == 0 and "downloaded" in first.stdout, first
    quick = cli_process("download", "--allow-local", "--json", model)
    typer_parsed = cli_process("download", "-j", "4", "--allow-local", "--json", model)
    assert quick == typer_parsed and json.loads(quick.stdout)[0]["status"] == "present"
    refused = cli_process("download", "--copy", "--symlink", model)  # the body's own check, quick path
    assert refused.code == 2 and "exclude each other" in refused.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["validate", "--bogus", "bvlc_alexnet"], "No such option: --bogus"),
        (["validate"], "Missing argument"),
        (["validate", "-qx", "bvlc_alexnet"], "No such option"),
        (["download", "--allow-locall", "bvlc_alexnet"], "No such option"),
    ],
)
def test_what_the_quick_path_does_not_know_typer_refuses(cli_process, args, says):
    r = cli_process(*args)
    assert r.code == 2 and says in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("switches", [[], ["--json"], ["--json", "--"]])  # `--`: Typer parses
def test_a_reader_gone_before_validate_prints_is_no_traceback(tmp_path, caffezoo_home, switches):
    # --json writes its document without a flush: the pipe breaks only when the output is flushed,
    # at the end (unless PYTHONUNBUFFERED, so the test runs without it).
    import os

    bad = _problem_model(tmp_path)
    p = subprocess.Popen(
        [sys.executable, "-m", "caffezoo", "validate", *switches, str(bad)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
    )
    p.stdout.close()  # as `| head -0` does, before the command writes a line
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 1 and "Traceback" not in err and "Broken pipe" not in err, err


@pytest.mark.parametrize("typer_parses", [False, True])
def test_a_reader_gone_from_stderr_leaves_stdout_whole(tmp_path, typer_parses):
    # `caffezoo download --json ... > out.json 2> >(head -0)`: the JSON goes to its file whatever became
    # of stderr, as click's handling of a broken pipe leaves it. Unbuffered output would hide a loss.
    import os

    r, w = os.pipe()
    os.close(r)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    words = ["--", "nosuch"] if typer_parses else ["nosuch"]
    with open(tmp_path / "out.json", "wb") as out:
        p = subprocess.run(
            [sys.executable, "-m", "caffezoo", "download", "--json", *words], stdout=out, stderr=w, env=env
        )
    os.close(w)
    assert p.returncode == 1
    assert json.loads((tmp_path / "out.json").read_text())[0]["model"] == "nosuch"


def _validate_interrupted(model, home, *args):
    """``caffezoo *args``, a validate of ``model``, stopped by Ctrl-C while it reads the record of a
    check passed before (made a FIFO, so that the read waits there): (status, stderr)."""
    import os
    import signal

    from download_helpers import wait_for

    (record,) = (home / "cache" / "clean-prototxts").glob("*/*")
    record.unlink()
    os.mkfifo(record)
    p = subprocess.Popen(
        [sys.executable, "-m", "caffezoo", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

    def writer() -> int | None:  # opens once the command waits on the FIFO, and leaves it waiting
        try:
            return os.open(record, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return None

    def reading() -> bool:  # blocked in a system call on its descriptor of the FIFO: read(2)
        assert p.poll() is None, p.communicate()  # ended before reading: fail now, with its output
        try:
            fds = [
                int(n)
                for n in os.listdir(f"/proc/{p.pid}/fd")
                if os.readlink(f"/proc/{p.pid}/fd/{n}") == str(record)
            ]
            call = Path(f"/proc/{p.pid}/syscall").read_text().split()
        except (OSError, ValueError):
            return False
        return len(call) > 1 and call[0] != "running" and int(call[1], 16) in fds

    try:
        fd = wait_for(writer, what="validate reading the record")
        # A Ctrl-C that lands after the open but before the read's system call is taken note of
        # and then waits for Python's next check, which the blocked read never reaches: send it
        # once the read is under way, where it interrupts the call.
        wait_for(reading, what="validate blocked reading the record")
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
        os.close(fd)
    finally:
        p.kill()
    return p.returncode, err


@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_ctrl_c_ends_validate_alike_whether_typer_parses_or_not(cli_process, tmp_path, caffezoo_home, debug):
    deploy = "input: 'data'\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n"
    m = write_model(tmp_path / "net", GOOD_FRONT_MATTER, files={"deploy.prototxt": deploy})
    assert cli_process("validate", m).code == 0  # records the deploy net as checked
    quick = _validate_interrupted(m, caffezoo_home, *debug, "validate", str(m))
    typer_parsed = _validate_interrupted(m, caffezoo_home, *debug, "validate", "--", str(m))
    assert quick == typer_parsed == (130, "")


@pytest.mark.parametrize("typer_parses", [False, True])
def test_a_stream_set_to_ascii_gets_the_names_in_utf8(cli_process, tmp_path, typer_parses):
    # PYTHONIOENCODING=ascii, or a locale whose codeset is ASCII: click's echo writes UTF-8 to such a
    # stream (its "misconfigured" case), which is what validate and download printed through Typer.
    bad = _problem_model(tmp_path / "modèle")
    dash = ["--"] if typer_parses else []
    env = {"PYTHONIOENCODING": "ascii"}
    checked = cli_process("validate", *dash, bad, env=env)
    assert checked.code == 1 and "Traceback" not in checked.stderr, checked.stderr
    assert f"{bad}/deploy.prototxt:2: error:" in checked.stdout
    unnamed = write_model(tmp_path / "modèle" / "no-weights", "name: x\n")  # names no weights file
    refused = cli_process("download", *dash, unnamed, env=env)
    assert refused.code == 1 and refused.stderr.startswith(f"error: {unnamed}: "), refused.stderr


def test_an_unknown_command_is_refused_with_the_full_list(cli_process):
    r = cli_process("validat", "x")
    assert r.code == 2 and "No such command 'validat'" in r.stderr


def test_the_help_lists_commands_in_one_order_whatever_ran_first(cli, monkeypatch):
    from caffezoo.cli._help import render

    monkeypatch.setenv("COLUMNS", "80")
    first = render()
    cli("validate", "bvlc_alexnet")  # in this process, the module of one command loads first...
    cli("cache", "ls")
    assert render() == first  # ...and the order does not follow


def test_help_validate_and_download_leave_the_heavy_libraries_alone(tmp_path, caffezoo_home):
    """Start-up: --help builds no command tree; an ordinary readme needs neither ruamel.yaml nor a
    pydantic model."""
    from download_helpers import blob, weights_model

    data = blob(1000, seed=5)
    (tmp_path / "w.bin").write_bytes(data)
    model = weights_model(tmp_path / "net", (tmp_path / "w.bin").as_uri(), data)
    heavy = ("typer", "pydantic", "ruamel.yaml", "rich", "httpx", "google.protobuf")
    cases = {
        ("--help",): {"typer", "pydantic", "ruamel.yaml", "rich", "httpx", "google.protobuf"},
        ("validate", "bvlc_alexnet"): {"typer", "pydantic", "ruamel.yaml", "rich", "httpx"},
        ("download", str(model), "--allow-local"): {"typer", "pydantic", "ruamel.yaml", "google.protobuf"},
    }
    for args, absent in cases.items():
        for _ in range(2):  # the second download finds the weights there
            code = (
                "import sys; from caffezoo.cli import main\n"
                f"try:\n    main({list(args)!r})\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
                f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
            )
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            loaded = set(eval(out.stdout.splitlines()[-1]))
            assert not loaded & absent, (args, loaded & absent)


@pytest.mark.parametrize("name", ["m" * 300, "./" + "m" * 300, "m" * 300 + ".prototxt"])
@pytest.mark.parametrize(
    "command",
    [
        ("inspect",),
        ("validate",),
        ("show",),
        ("download",),
        ("draw", "-o", "x.svg"),
        ("convert", "-o", "x.onnx"),
    ],
)
def test_a_model_name_too_long_for_a_file_name_is_a_clear_error(
    cli, caffezoo_home, monkeypatch, command, name
):
    """A MODEL the system refuses to look up (a name over 255 bytes) is not there: an error, no traceback."""
    monkeypatch.setenv("CAFFEZOO_OFFLINE", "1")
    r = cli(command[0], name, *command[1:])
    assert r.code == 1 and "m" * 20 in r.stdout + r.stderr, r  # validate prints its problems on stdout


@pytest.mark.parametrize("args", [["validate", "bvlc_alexnet"], ["list"]])
def test_a_command_started_with_stdout_closed_is_no_traceback(caffezoo_home, args):
    """`caffezoo validate x >&-`: Python gives sys.stdout None; printing to it was an AttributeError."""
    p = subprocess.run(
        [sys.executable, "-m", "caffezoo", *args],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.close(1),
        timeout=120,
    )
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads the process's descriptors in /proc")
def test_a_download_started_with_stdin_and_stderr_closed_keeps_its_files_off_fd_2(caffezoo_home, tmp_path):
    """`caffezoo download m <&- 2>&-`: the /dev/null standing in for stderr took the lowest free
    descriptor, 0, and the download's next file (the blob's lock) became fd 2, where whatever
    writes to the process's stderr below Python (C libraries, fatal errors) would land."""
    import http.server
    import threading

    from download_helpers import blob, wait_for, weights_model

    data = blob(1000)
    asked, release = threading.Event(), threading.Event()

    class Held(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            asked.set()
            release.wait(60)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Held)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    model = weights_model(tmp_path / "m", f"http://127.0.0.1:{server.server_port}/w.caffemodel", data)

    def close_stdin_and_stderr():
        os.close(0)
        os.close(2)

    p = subprocess.Popen(
        [sys.executable, "-m", "caffezoo", "download", str(model)],
        stdout=subprocess.PIPE,
        preexec_fn=close_stdin_and_stderr,
    )
    try:
        wait_for(asked.is_set, what="the download's request")
        fd2 = os.readlink(f"/proc/{p.pid}/fd/2")
    finally:
        release.set()
        p.communicate(timeout=120)
        server.shutdown()
    assert fd2 == os.devnull, fd2
    assert p.returncode == 0
