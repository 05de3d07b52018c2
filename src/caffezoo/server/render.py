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

Both are bounded. markdown-it's time grows much faster than its input on some
texts (100 KB of ``[`` took 13 s: every unclosed bracket is rescanned), so Markdown
over :data:`MAX_MARKDOWN_CHARS` characters, or whose brackets would be rescanned
more than :data:`MAX_MARKDOWN_BRACKET_SCAN` characters (:func:`bracket_scan`), is not formatted: it is shown as escaped plain
text (:func:`plain_html`), cut at :data:`MAX_PLAIN_CHARS`. Measured on this
project's inputs, every text within both budgets renders in well under a second
(linear at about 5 µs a character on the worst inputs found: emphasis runs, lists,
headings), and a parse still running after :data:`MARKDOWN_SECONDS` is stopped
by a parser rule that checks the clock (:func:`_check_deadline`) and the text is
shown plain as well. A prototxt over :data:`MAX_HIGHLIGHT_BYTES` or with more than
:data:`MAX_HIGHLIGHT_TOKENS` tokens is shown as plain lines.
"""

from __future__ import annotations

import re
import time
from functools import lru_cache
from html import escape

import nh3
from markdown_it import MarkdownIt

__all__ = [
    "MAX_PLAIN_CHARS",
    "bracket_scan",
    "highlight_prototxt",
    "inline_markdown_html",
    "markdown_html",
    "plain_lines",
    "sanitize",
]

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
MAX_HIGHLIGHT_TOKENS = 60_000  # ~25 bytes of markup each: the highlighted file stays a few MB
MAX_MARKDOWN_CHARS = 64 * 1024  # the formatting budget: ~0.3 s on the worst linear inputs
# Each '[' makes markdown-it scan for its ']' up to the end of the paragraph, running
# the inline rules on the way (~65 ns a character at worst): the sum of those spans
# is budgeted, so 2,000 unclosed brackets before 60 KB of emphasis (8 s) are refused.
MAX_MARKDOWN_BRACKET_SCAN = 50_000
MARKDOWN_SECONDS = 0.5  # the backstop: a parse still running then is stopped, the text shown plain
MAX_PLAIN_CHARS = 1024 * 1024  # what a page shows of a text too costly to format


def _image_as_link(self, tokens, idx, options, env) -> str:
    """Render ``![alt](src)`` as a link to the image, never as an ``<img>``."""
    token = tokens[idx]
    alt = self.renderInline(token.children or [], options, env) if token.children else token.content
    src = token.attrGet("src") or ""
    return f'<a href="{escape(src)}">{alt or "image"} (image)</a>'


class FormattingTooSlow(Exception):
    """markdown-it ran past the formatting deadline."""


def _check_deadline(state, *_args) -> bool:
    """A parser rule that never matches: it stops the parse once its deadline has passed.

    Rules run at every position the block and inline parsers try, and the link-label
    scan's ``skipToken`` checks it too, so this bounds markdown-it's time on inputs the pre-scan misses."""
    deadline = state.env.get("deadline") if isinstance(state.env, dict) else None
    if deadline is not None and time.monotonic() > deadline:
        raise FormattingTooSlow
    return False


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    md = MarkdownIt("js-default")  # html: false; links validated; tables and strikethrough on
    md.add_render_rule("image", _image_as_link)
    md.block.ruler.before("table", "deadline", _check_deadline, {"alt": ["paragraph", "reference", "list"]})
    md.inline.ruler.before("text", "deadline", _check_deadline)
    skip = md.inline.skipToken  # link labels rescan through it, often past cached positions

    def skip_token(state) -> None:
        _check_deadline(state)
        skip(state)

    md.inline.skipToken = skip_token
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


def too_costly(text: str) -> str | None:
    """Why formatting ``text`` as Markdown would cost too much, or None: a linear pre-scan."""
    if len(text) > MAX_MARKDOWN_CHARS:
        return f"it is {len(text):,} characters long, over the {MAX_MARKDOWN_CHARS:,} that are formatted"
    if bracket_scan(text) > MAX_MARKDOWN_BRACKET_SCAN:
        return "its brackets ('[' without a near ']') would take too long to format"
    return None


def bracket_scan(text: str, stop: int = MAX_MARKDOWN_BRACKET_SCAN) -> int:
    """How many characters markdown-it would scan looking for the ``]`` of every ``[``
    (to the next ``]`` or blank line); counting stops past ``stop``. Linear: each
    search starts where the last one ended."""
    n, cost = len(text), 0
    close = blank = -1
    i = text.find("[")
    while i != -1 and cost <= stop:
        if close < i:
            close = text.find("]", i)
            close = n if close == -1 else close
        if blank < i:
            blank = text.find("\n\n", i)
            blank = n if blank == -1 else blank
        cost += min(close, blank) - i
        i = text.find("[", i + 1)
    return cost


def plain_html(text: str, reason: str, raw_url: str | None = None) -> str:
    """``text`` escaped in a ``<pre>``, cut at :data:`MAX_PLAIN_CHARS`, after a note that says why."""
    shown = text[:MAX_PLAIN_CHARS]
    note = f"Shown as plain text: {escape(reason)}."
    if len(text) > len(shown):
        note += f" Only the first {MAX_PLAIN_CHARS:,} characters are shown."
    if raw_url:
        note += f' <a href="{escape(raw_url)}">The whole file</a>.'
    return f'<p class="muted plain-note">{note}</p>\n<pre class="plain-text">{escape(shown)}</pre>\n'


def markdown_html(text: str, demote: int = 0, raw_url: str | None = None) -> str:
    """Untrusted Markdown as safe HTML; ``demote`` moves headings down (``# x`` -> ``<h2>``
    with 1), so a readme's title does not compete with the page's own ``<h1>``.

    A text over the formatting budget (:func:`too_costly`) comes back as
    :func:`plain_html`, with a link to ``raw_url`` when given."""
    reason = too_costly(text)
    if reason is not None:
        return plain_html(text, reason, raw_url)
    md = _markdown()
    try:
        tokens = md.parse(text, {"deadline": time.monotonic() + MARKDOWN_SECONDS})
    except FormattingTooSlow:
        return plain_html(text, f"it took over {MARKDOWN_SECONDS:g} s to format", raw_url)
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
    text = " ".join(text[:MAX_MARKDOWN_CHARS].split())
    if too_costly(text) is not None:
        return escape(text)
    md = _markdown()
    env = {"deadline": time.monotonic() + MARKDOWN_SECONDS}
    try:
        return sanitize(md.renderInline(text, env))
    except FormattingTooSlow:
        return escape(text)


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
    out, tokens = [], 0
    for line in text.split("\n"):
        parts, pos = [], 0
        for m in _TOKEN_RE.finditer(line):
            tokens += 1
            if tokens > MAX_HIGHLIGHT_TOKENS:
                return plain_lines(text)
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
