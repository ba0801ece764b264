"""Text snippets: a window of a text atlas's input around one token, the token marked (what
a text atlas shows where an image atlas shows a receptive-field crop).

Pure (no Dash) except :func:`snippet`, which wraps the parts in HTML.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from dash import html

from compute.atlas import TextInput

#: Tokens shown on each side of the marked one.
WINDOW = 8


class SnippetParts(NamedTuple):
    """A snippet: the text before the token, the token's own text, the text after it."""

    before: str
    token: str
    after: str


def snippet_parts(text: TextInput, token: int, window: int = WINDOW) -> SnippetParts:
    """The text around token ``token`` of ``text``: up to ``window`` tokens each side, cut at
    token boundaries ("…" where the text goes on). A special token (``[CLS]``: no span in
    the text) is shown by its name, the text after it as its context.

    Examples:
        >>> text = TextInput("the cat eats fish", ("[CLS]", "the", "cat", "eats", "fish",
        ...     "[SEP]"), ((0, 0), (0, 3), (4, 7), (8, 12), (13, 17), (0, 0)))
        >>> snippet_parts(text, 2, window=1)
        SnippetParts(before='the ', token='cat', after=' eats…')
        >>> snippet_parts(text, 0, window=2)
        SnippetParts(before='', token='[CLS]', after=' the cat…')
        >>> snippet_parts(text, 5, window=2)
        SnippetParts(before='…eats fish ', token='[SEP]', after='')
        >>> cut = TextInput("the cat eats fish", ("[CLS]", "the", "cat", "[SEP]"),
        ...     ((0, 0), (0, 3), (4, 7), (0, 0)))                  # truncated at 4 tokens
        >>> snippet_parts(cut, 3)
        SnippetParts(before='the cat ', token='[SEP]', after='')
    """
    if not 0 <= token < len(text.tokens):
        raise ValueError(f"token {token} of an input with {len(text.tokens)} tokens")
    real = [k for k, (a, b) in enumerate(text.spans) if b > a]
    start, end = text.spans[token]
    if end <= start:  # a special token: its name, with the text on its side as context
        after_tokens = [k for k in real if k > token][:window]
        if after_tokens:  # e.g. [CLS]: the text that follows
            last = text.spans[after_tokens[-1]][1]
            more = "…" if last < len(text.text) else ""
            return SnippetParts("", text.tokens[token], " " + text.text[:last] + more)
        before_tokens = [k for k in real if k < token][-window:]  # e.g. [SEP]: what precedes
        if not before_tokens:
            return SnippetParts("", text.tokens[token], "")
        first, last = text.spans[before_tokens[0]][0], text.spans[before_tokens[-1]][1]
        # Only what the model saw: a truncated input's [SEP] follows its last kept token.
        head = ("…" if first > 0 else "") + text.text[first:last]
        return SnippetParts(head + " ", text.tokens[token], "")
    left = [k for k in real if k < token][-window:]
    right = [k for k in real if k > token][:window]
    first = text.spans[left[0]][0] if left else start
    last = text.spans[right[-1]][1] if right else end
    before = ("…" if first > 0 else "") + text.text[first:start]
    after = text.text[end:last] + ("…" if last < len(text.text) else "")
    return SnippetParts(before, text.text[start:end], after)


def snippet(text: TextInput | None, token: int, **props: Any) -> html.Span:
    """The snippet as HTML (the token in a ``mark``; a negative ``token``: the whole text,
    nothing marked); a note when the text is not stored."""
    if text is None or token >= len(text.tokens):
        return html.Span("(text not stored)", className="snippet muted", **props)
    if token < 0:  # no token (a mean over the input's tokens): the whole text
        return html.Span(text.text, className="snippet", **props)
    parts = snippet_parts(text, token)
    return html.Span(
        [parts.before, html.Mark(parts.token), parts.after], className="snippet", **props
    )


def seen_text(text: TextInput) -> str:
    """The part of the input the model saw ("…" where the tokenizer cut it)."""
    seen = text.seen
    return seen + ("…" if len(seen) < len(text.text.rstrip()) else "")
