"""The text of ``caffezoo --help``, kept so that printing it builds no command tree.

Regenerate after changing a command's name or first docstring line::

    python -m caffezoo.cli._help

(tests/test_cli.py checks that this text is what the full Typer tree prints).
"""

from __future__ import annotations

TOP_LEVEL = """\
Usage: caffezoo [OPTIONS] COMMAND [ARGS]...

  The Caffe Model Zoo: package, publish, find, fetch and run Caffe models.

Options:
  --debug     Show the full traceback when a command fails.
  --version   Print the version and exit.
  -h, --help  Show this message and exit.

Commands:
  inspect   Show a net layer by layer: type, bottoms -> tops, output...
  upgrade   Upgrade a V0/V1 prototxt or caffemodel to today's format, by...
  draw      Draw a net as a graph picture, like Caffe's draw_net.py...
  download  Download the weights named in each MODEL's readme.md; confirm...
  list      List the models the zoo has: name, title, license, weights...
  show      Show one model in full: front matter, files, license, where...
  new       Scaffold a model directory: a readme.md with front matter and...
  validate  Check model directories; print every problem as `path:line:...
  convert   Convert a Caffe model to ONNX, with Caffe's numbers.
  run       Run a model on images for its task: classes, boxes, class...
  cache     The blob cache: downloaded weights, stored once by SHA-1,...
  gist      Share model info as gists, on GitHub or on a caffezoo server...
  serve     Run the caffezoo server (web wiki, Gist API, mirror), or...
  wiki      Import a Caffe Model-Zoo wiki page into a zoo server's...
"""


def render() -> str:
    """What the full command tree prints for ``caffezoo --help`` at 80 columns or more."""
    import typer.main

    from . import load_commands

    command = typer.main.get_command(load_commands())
    with command.make_context("caffezoo", ["--help"], resilient_parsing=True) as ctx:
        return command.get_help(ctx) + "\n"


if __name__ == "__main__":
    import os
    import re
    from pathlib import Path

    os.environ["COLUMNS"] = "80"
    path = Path(__file__)
    source = path.read_text(encoding="utf-8")
    text = render()
    assert '"""' not in text and "\\" not in text
    new = re.sub(r"(?ms)^TOP_LEVEL = .*?^(?=\n\ndef render)", f'TOP_LEVEL = """\\\n{text}"""\n', source)
    path.write_text(new, encoding="utf-8")
    print(f"wrote {path}")
