"""Turning what users wrote into HTML that cannot hurt a reader.

>>> markdown_html("Hi <script>alert(1)</script> [x](javascript:alert(1))")
'<p>Hi &lt;script&gt;alert(1)&lt;/script&gt; [x](javascript:alert(1))</p>\\n'
>>> highlight_prototxt('name: "Net"  # a comment')
'<span class="ln"><span class="k">name</span><span class="p">:</span> <span class="s">&quot;Net&quot;</span>  <span class="c"># a comment</span></span>\\n'

Markdown goes through two independent gates. markdown-it-py's ``js-default``
preset treats raw HTML as text and refuses ``javascript:``, ``vbscript:``,
``file:`` and most ``data:`` links; then nh3 (the Rust ``ammonia`` sanitizer)
keeps only an allow-list of tags and attributes, ``http``/``https``/``mailto``
links, and adds ``rel="nofollow noopener noreferrer"``. No ``style``, ``class``,
``id`` or event attribute survives, and images become plain links: the pages'
Content-Security-Policy would block foreign images anyway, and a link does not
fetch anything (no tracking pixel) until the reader chooses to.

The prototxt highlighter is a dozen lines of regular expressions: the text
format has five kinds of token, which is less than a Pygments dependency's worth.
"""

from __future__ import annotations

import re
from functools import lru_cache
from html import escape

import nh3
from markdown_it import MarkdownIt

ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "pre",
    "code",
    "kbd",
    "samp",
    "em",
    "strong",
    "del",
    "s",
    "sub",
    "sup",
    "ul",
    "ol",
    "li",
    "dl",
    "dt",
    "dd",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "ol": {"start"},
    "th": {"colspan", "rowspan"},
    "td": {"colspan", "rowspan"},
}
URL_SCHEMES = {"http", "https", "mailto"}
MAX_HIGHLIGHT_BYTES = 512 * 1024  # larger files are shown as plain text


def _image_as_link(self, tokens, idx, options, env) -> str:
    """Render ``![alt](src)`` as a link to the image, never as an ``<img>``."""
    token = tokens[idx]
    alt = self.renderInline(token.children or [], options, env) if token.children else token.content
    src = token.attrGet("src") or ""
    return f'<a href="{escape(src)}">{alt or "image"} (image)</a>'


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    md = MarkdownIt("js-default")  # html: false; links validated; tables and strikethrough on
    md.add_render_rule("image", _image_as_link)
    return md


_cleaner: nh3.Cleaner | None = None


def sanitize(html: str) -> str:
    """Keep only the allow-listed tags, attributes and URL schemes of ``html``."""
    global _cleaner
    if _cleaner is None:
        _cleaner = nh3.Cleaner(
            tags=ALLOWED_TAGS,
            attributes=ALLOWED_ATTRIBUTES,
            url_schemes=URL_SCHEMES,
            link_rel="nofollow noopener noreferrer",
            strip_comments=True,
            clean_content_tags={"script", "style"},
        )
    return _cleaner.clean(html)


def markdown_html(text: str, demote: int = 0) -> str:
    """Untrusted Markdown as safe HTML; ``demote`` moves headings down (``# x`` -> ``<h2>``
    with 1), so a readme's title does not compete with the page's own ``<h1>``."""
    md = _markdown()
    tokens = md.parse(text)
    if demote:
        for t in tokens:
            if t.type in ("heading_open", "heading_close"):
                t.tag = f"h{min(6, int(t.tag[1]) + demote)}"
    return sanitize(md.renderer.render(tokens, md.options, {}))


def inline_markdown_html(text: str) -> str:
    """One line of untrusted Markdown (links, emphasis, code) as safe inline HTML, no paragraph.

    >>> inline_markdown_html("VGG [paper](https://arxiv.org/abs/1409.1556), *16* layers")
    'VGG <a href="https://arxiv.org/abs/1409.1556" rel="nofollow noopener noreferrer">paper</a>, <em>16</em> layers'
    """
    md = _markdown()
    return sanitize(md.renderInline(" ".join(text.split())))


# --------------------------------------------------------------------------- prototxt

_TOKEN_RE = re.compile(
    r"(?P<c>#.*)"
    r'|(?P<s>"(?:[^"\\]|\\.)*"?|\'(?:[^\'\\]|\\.)*\'?)'
    r"|(?P<k>[A-Za-z_]\w*)(?=\s*[:{])"
    r"|(?P<n>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?f?\b|[-+]?(?:inf|nan)\b)"
    r"|(?P<e>[A-Za-z_]\w*)"
    r"|(?P<p>[{}:\[\],<>;])"
)


def highlight_prototxt(text: str) -> str:
    """Protobuf text format as HTML spans: ``k`` keys, ``s`` strings, ``n`` numbers,
    ``e`` enum values, ``c`` comments, ``p`` punctuation; one ``ln`` span a line."""
    if len(text) > MAX_HIGHLIGHT_BYTES:
        return plain_lines(text)
    out = []
    for line in text.split("\n"):
        parts, pos = [], 0
        for m in _TOKEN_RE.finditer(line):
            if m.start() > pos:
                parts.append(escape(line[pos : m.start()]))
            parts.append(f'<span class="{m.lastgroup}">{escape(m.group())}</span>')
            pos = m.end()
        parts.append(escape(line[pos:]))
        out.append(f'<span class="ln">{"".join(parts)}</span>\n')
    if out and out[-1] == '<span class="ln"></span>\n':
        out.pop()  # the newline that ends the file is not a line of its own
    return "".join(out)


def plain_lines(text: str) -> str:
    """Any text file, escaped, one ``ln`` span a line (for the line numbers)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return "".join(f'<span class="ln">{escape(line)}</span>\n' for line in lines)
