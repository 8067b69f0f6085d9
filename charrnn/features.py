"""Per-character features of a text, to be compared with hidden-unit activations.

Each feature gives one value per character of the text (positions are characters, not bytes)::

    features = builtin_features(text)                  # the built-in detectors below, in a fixed order
    features.append(regex_feature("url", r"https?://\\S+", text))
    name, pattern = parse_feature_spec("vowel=[aeiou]")  # what `--feature NAME=REGEX` gives

Convention, the same as `charrnn.synthetic`'s ground truth: the value at position t is the state a
left-to-right reader is in *after* reading character t, which is all that a recurrent network's hidden state
after input t can know. So an opening quote or bracket is already inside at its own position and a closing
one is already outside at its own position. A delimiter of several characters takes effect at the
character that completes it: in ``/*`` and ``//`` the ``/`` is still outside (it might be a division) and
the second character is inside; in ``*/`` the ``*`` is still inside and the ``/`` is outside; in a closing
``\"\"\"`` the first two quotes are inside.

Binary features (bool, scored by AUROC):

- ``in_double_quotes``: ``"`` toggles, unless escaped by an odd number of backslashes; ``“`` opens and ``”``
  closes. A blank line (two newlines with only spaces or tabs between) closes any open quote at its second
  newline, since novels open a fresh quote at each paragraph of a long speech without closing the last.
- ``in_single_quotes``: a ``'`` or ``‘`` opens when the character before it is not a letter or digit (or
  it starts the text) and the one after it is not whitespace; a ``'`` or ``’`` closes an open span when
  the character before it is not whitespace and the one after it is not a letter or digit (or it ends the
  text). Apostrophes inside words (don't, Anaïs's) neither open nor close, and a closing-looking ``'``
  with no span open (the dogs' bowls) is ignored. A blank line closes, as for double quotes.
- ``in_comment``: ``/* ... */`` (across lines), ``// ...`` and ``# ...`` to the end of the line, the
  newline itself outside. A ``#`` that starts a C preprocessor directive (first non-blank character of
  the line, then optional blanks and include, define, undef, if, ifdef, ifndef, elif, else, endif,
  pragma, error, warning or line) is code, and so is any other ``#`` on that line.
- ``in_string``: code string literals ``"..."``, ``'...'``, ``\"\"\"...\"\"\"``, ``'''...'''`` with backslash
  escapes (a backslash before a newline continues the string). A one-quote string that is not closed
  ends before the newline; a triple-quoted one runs on. A ``'`` right after a letter or digit is an
  apostrophe, not a string, unless that letter is a whole Python string prefix (``r'...'``, ``b'...'``,
  ``f'...'``, ``u'...'``, ``rb'...'`` and so on). Comments and strings are read in one pass, so a ``#``
  or ``//`` inside a string is not a comment and a quote inside a comment is not a string. ``//`` is
  always taken as a C comment, also in Python code where it is floor division.
- ``word_start``: a letter, digit or ``_`` after a character that is none of those (or at t = 0).
- ``uppercase``, ``digit``, ``whitespace``: ``str.isupper()``, ``str.isdigit()``, ``str.isspace()``.
- ``sentence_end``: ``.``, ``!``, ``?`` or ``…`` followed by whitespace, a closing quote (``"``, ``'``,
  ``”``, ``’``), ``)``, ``]`` or the end of the text; so in ``...`` only the last dot counts.

Count features (int32, scored by correlation):

- ``paren_depth``, ``square_depth``, ``curly_depth``: how many ``(``, ``[``, ``{`` are open; a closer with
  none open is ignored, so depths never go below 0. ``bracket_depth`` is their sum. Brackets are counted
  everywhere, in quotes and comments too.
- ``column``: characters since the last newline, counting t; a newline is column 0, so ``"ab\\ncd"`` gives
  ``1, 2, 0, 1, 2``.
- ``indentation``: width of the leading blanks of the current line read so far (a space is 1, a tab moves
  to the next multiple of 8); it stays fixed from the first non-blank character to the end of the line,
  and a newline is 0.

Only ``"\\n"`` ends a line: a ``"\\r"`` is an ordinary character (the corpus loader turns ``\\r\\n`` and lone
``\\r`` into ``\\n`` unless asked to keep them). The features use a regular-expression scan or numpy per
detector; all of them take well under a second per million characters.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

KINDS = ("binary", "count")

BUILTIN_NAMES = (
    "in_double_quotes",
    "in_single_quotes",
    "in_comment",
    "in_string",
    "word_start",
    "uppercase",
    "digit",
    "whitespace",
    "sentence_end",
    "paren_depth",
    "square_depth",
    "curly_depth",
    "bracket_depth",
    "column",
    "indentation",
)

_DESCRIPTIONS = {
    "in_double_quotes": "inside double quotes (“ ” too); a blank line ends them",
    "in_single_quotes": "inside single quotes (‘ ’ too), not apostrophes; a blank line ends them",
    "in_comment": "inside a code comment: /* */, // or # to the end of the line (not #include and the like)",
    "in_string": "inside a code string literal: \"…\", '…' or triple-quoted, with backslash escapes",
    "word_start": "first character of a word (letter, digit or _ after none of those)",
    "uppercase": "an uppercase letter",
    "digit": "a digit",
    "whitespace": "whitespace (space, tab, newline, …)",
    "sentence_end": "a sentence-ending . ! ? … (before whitespace, a closing quote or bracket, or the end)",
    "paren_depth": "how many ( are open",
    "square_depth": "how many [ are open",
    "curly_depth": "how many { are open",
    "bracket_depth": "how many ( [ { are open in all",
    "column": "characters since the last newline (a newline is 0)",
    "indentation": "width of the line's leading spaces and tabs (tab stops every 8)",
}


@dataclasses.dataclass(frozen=True, eq=False)
class Feature:
    """One value per character of a text: bool for a "binary" feature, int32 for a "count" feature."""

    name: str
    kind: str  # "binary" (scored by AUROC) or "count" (scored by correlation)
    values: np.ndarray  # (N,)
    description: str  # one line for humans

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"feature {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if np.ndim(self.values) != 1:
            raise ValueError(f"feature {self.name!r}: values must be one-dimensional, got shape "
                             f"{np.shape(self.values)}")


def builtin_features(text: str) -> list[Feature]:
    """All built-in features of `text`, in the order of `BUILTIN_NAMES` (see the module docstring)."""
    chars = _CharClasses(text)
    in_comment, in_string = _code_regions(text)
    paren, square, curly = (_depth(chars.codes, opener, closer) for opener, closer in ("()", "[]", "{}"))
    binary = {
        "in_double_quotes": _in_double_quotes(text),
        "in_single_quotes": _in_single_quotes(text),
        "in_comment": in_comment,
        "in_string": in_string,
        "word_start": _word_start(chars.word),
        "uppercase": chars.upper,
        "digit": chars.digit,
        "whitespace": chars.space,
        "sentence_end": _sentence_end(chars),
    }
    count = {
        "paren_depth": paren,
        "square_depth": square,
        "curly_depth": curly,
        "bracket_depth": paren + square + curly,
        "column": _column(chars.codes),
        "indentation": _indentation(text),
    }
    features = [Feature(name, "binary", values.astype(bool, copy=False), _DESCRIPTIONS[name])
                for name, values in binary.items()]
    features += [Feature(name, "count", values.astype(np.int32, copy=False), _DESCRIPTIONS[name])
                 for name, values in count.items()]
    assert tuple(f.name for f in features) == BUILTIN_NAMES
    return features


def regex_feature(name: str, pattern: str, text: str) -> Feature:
    """A binary feature that is on at every character inside a match of `pattern` (``re.MULTILINE``).

    Matches are found with `re.finditer`, so they do not overlap; zero-width matches mark nothing, and a
    pattern that never matches gives an all-False feature. Raises ValueError if `pattern` does not compile.
    """
    try:
        regex = re.compile(pattern, re.MULTILINE)
    except re.error as e:
        raise ValueError(f"feature {name!r}: bad regular expression {pattern!r}: {e}") from None
    spans = [m.span() for m in regex.finditer(text)]
    return Feature(name, "binary", _spans_to_mask(len(text), spans), f"inside a match of /{pattern}/")


def parse_feature_spec(spec: str) -> tuple[str, str]:
    """Split a ``NAME=REGEX`` command-line spec into ``(name, regex)``, checking both.

    The name is what comes before the first ``=`` (surrounding blanks dropped); the regex is everything
    after it, kept as it is. ValueError, naming the spec, when there is no ``=``, the name is empty or a
    built-in feature's, or the regex is empty or does not compile.
    """
    name, sep, pattern = spec.partition("=")
    name = name.strip()
    where = f"--feature {spec!r}"
    if not sep:
        raise ValueError(f"{where}: expected NAME=REGEX, e.g. --feature 'vowel=[aeiou]'")
    if not name:
        raise ValueError(f"{where}: the name before '=' is empty")
    if name in BUILTIN_NAMES:
        raise ValueError(f"{where}: {name!r} is already a built-in feature; choose another name")
    if not pattern:
        raise ValueError(f"{where}: the regular expression after '=' is empty")
    try:
        re.compile(pattern, re.MULTILINE)
    except re.error as e:
        raise ValueError(f"{where}: {e}") from None
    return name, pattern


# ---------------------------------------------------------------------------------------------------------
# Helpers


def _spans_to_mask(n: int, spans: list[tuple[int, int]]) -> np.ndarray:
    """(n,) bool, True on every [start, stop) of `spans` (empty spans mark nothing; overlaps are fine)."""
    if not spans:
        return np.zeros(n, bool)
    bounds = np.array(spans, np.int64).reshape(-1, 2)
    bounds = bounds[bounds[:, 1] > bounds[:, 0]]
    delta = np.bincount(bounds[:, 0], minlength=n + 1) - np.bincount(bounds[:, 1], minlength=n + 1)
    return np.cumsum(delta[:n]) > 0


class _CharClasses:
    """Code points of a text and per-character class flags, each predicate run once per distinct char."""

    def __init__(self, text: str):
        self.codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int64)
        present = np.flatnonzero(np.bincount(self.codes)) if len(self.codes) else np.zeros(0, np.int64)
        distinct = [chr(c) for c in present]

        def flags(predicate) -> np.ndarray:
            table = np.zeros(int(present[-1]) + 1 if len(present) else 1, bool)
            table[present] = [predicate(c) for c in distinct]
            return table[self.codes]

        self.word = flags(lambda c: c.isalnum() or c == "_")
        self.upper = flags(str.isupper)
        self.digit = flags(str.isdigit)
        self.space = flags(str.isspace)
        self.sentence_mark = flags(lambda c: c in ".!?…")
        self.after_sentence = flags(lambda c: c.isspace() or c in "\"'”’)]")


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


# A blank line: the match ends just before its second newline, which is where a paragraph break is seen.
_BLANK_LINE = r"\n[ \t]*(?=\n)"
_DOUBLE_QUOTE_EVENTS = re.compile(rf'["“”]|{_BLANK_LINE}')
_SINGLE_QUOTE_EVENTS = re.compile(rf"['‘’]|{_BLANK_LINE}")


def _escaped(text: str, pos: int) -> bool:
    """Whether text[pos] follows an odd number of backslashes."""
    start = pos
    while start > 0 and text[start - 1] == "\\":
        start -= 1
    return (pos - start) % 2 == 1


def _in_double_quotes(text: str) -> np.ndarray:
    spans = []
    inside, opened = False, 0
    for m in _DOUBLE_QUOTE_EVENTS.finditer(text):
        mark, pos = m.group(), m.start()
        if mark == '"':
            if _escaped(text, pos):
                continue
            now = not inside
        elif mark == "“":
            now = True
        elif mark == "”":
            now = False
        else:  # a blank line: outside from its second newline on
            pos, now = m.end(), False
        if now and not inside:
            opened = pos
        elif inside and not now:
            spans.append((opened, pos))
        inside = now
    if inside:
        spans.append((opened, len(text)))
    return _spans_to_mask(len(text), spans)


def _in_single_quotes(text: str) -> np.ndarray:
    n = len(text)
    spans = []
    inside, opened = False, 0
    for m in _SINGLE_QUOTE_EVENTS.finditer(text):
        mark, pos = m.group(), m.start()
        if mark[0] == "\n":  # a blank line
            if inside:
                spans.append((opened, m.end()))
            inside = False
            continue
        before = text[pos - 1] if pos > 0 else None
        after = text[pos + 1] if pos + 1 < n else None
        if inside:
            if mark != "‘" and before is not None and not before.isspace() and not (after and after.isalnum()):
                spans.append((opened, pos))
                inside = False
        elif mark != "’" and not (before and before.isalnum()) and after is not None and not after.isspace():
            inside, opened = True, pos
    if inside:
        spans.append((opened, n))
    return _spans_to_mask(n, spans)


_CODE_TOKEN = re.compile(r"""/[*/]|#|\"\"\"|'''|["']""")
_DIRECTIVE = re.compile(r"#[ \t]*(?:include|define|undef|if|ifdef|ifndef|elif|else|endif|pragma|error|warning|line)\b")
# The body of a string after its opening quote: it stops before the closing quote, before a newline (one-quote
# strings only), before a backslash that ends the text, or at the end of the text.
_STRING_BODY = {
    '"': re.compile(r'[^"\\\n]*(?:\\.[^"\\\n]*)*', re.DOTALL),
    "'": re.compile(r"[^'\\\n]*(?:\\.[^'\\\n]*)*", re.DOTALL),
    '"""': re.compile(r'[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*', re.DOTALL),
    "'''": re.compile(r"[^'\\]*(?:(?:\\.|'(?!''))[^'\\]*)*", re.DOTALL),
}
_STRING_PREFIXES = frozenset({"r", "u", "b", "f", "rb", "br", "rf", "fr"})


def _is_directive(text: str, pos: int) -> bool:
    """Whether the '#' at `pos` starts a C preprocessor directive."""
    start = pos
    while start > 0 and text[start - 1] in " \t":
        start -= 1
    return (start == 0 or text[start - 1] == "\n") and _DIRECTIVE.match(text, pos) is not None


def _apostrophe(text: str, pos: int) -> bool:
    """Whether the ' at `pos` follows a letter or digit that is not a whole Python string prefix (r'', b'')."""
    if pos == 0 or not text[pos - 1].isalnum():
        return False
    start = pos
    while start > 0 and pos - start < 3 and _is_word_char(text[start - 1]):
        start -= 1
    whole_word = start == 0 or not _is_word_char(text[start - 1])
    return not (whole_word and text[start:pos].lower() in _STRING_PREFIXES)


def _code_regions(text: str) -> tuple[np.ndarray, np.ndarray]:
    """(in_comment, in_string), from one left-to-right pass over comments and string literals."""
    n = len(text)
    comments, strings = [], []
    pos = 0
    directive_end = 0  # a '#' before this index is on a preprocessor directive's line
    while (m := _CODE_TOKEN.search(text, pos)) is not None:
        start, token = m.start(), m.group()
        if token == "/*":
            close = text.find("*/", start + 2)
            comments.append((start + 1, n if close < 0 else close + 1))
            pos = n if close < 0 else close + 2
        elif token == "//" or token == "#":
            if token == "#" and (start < directive_end or _is_directive(text, start)):
                if start >= directive_end:
                    eol = text.find("\n", start)
                    directive_end = n if eol < 0 else eol
                pos = start + 1
                continue
            eol = text.find("\n", start)
            eol = n if eol < 0 else eol
            comments.append((start + 1 if token == "//" else start, eol))
            pos = eol
        elif token[0] == "'" and _apostrophe(text, start):
            pos = start + 1
        else:
            end = _STRING_BODY[token].match(text, start + len(token)).end()
            if end >= n or text[end] == "\\":  # not closed before the end of the text
                strings.append((start, n))
                pos = n
            elif text[end] == "\n":  # a one-quote string left open: it ends before the newline
                strings.append((start, end))
                pos = end
            else:  # the last character of the closing quote is outside
                strings.append((start, end + len(token) - 1))
                pos = end + len(token)
    return _spans_to_mask(n, comments), _spans_to_mask(n, strings)


def _word_start(word: np.ndarray) -> np.ndarray:
    start = word.copy()
    start[1:] &= ~word[:-1]
    return start


def _sentence_end(chars: _CharClasses) -> np.ndarray:
    followed = np.ones_like(chars.sentence_mark)  # the end of the text counts
    followed[:-1] = chars.after_sentence[1:]
    return chars.sentence_mark & followed


def _depth(codes: np.ndarray, opener: str, closer: str) -> np.ndarray:
    """Open brackets after each character, a closer at depth 0 ignored: the walk reflected at 0."""
    steps = (codes == ord(opener)).astype(np.int64) - (codes == ord(closer))
    walk = np.cumsum(steps)
    lowest = np.minimum.accumulate(np.minimum(walk, 0)) if len(walk) else walk
    return walk - lowest


def _column(codes: np.ndarray) -> np.ndarray:
    index = np.arange(len(codes))
    last_newline = np.maximum.accumulate(np.where(codes == ord("\n"), index, -1)) if len(codes) else index
    return index - last_newline


_INDENTED_LINE = re.compile(r"^([ \t]+)[^\n]*", re.MULTILINE)


def _indentation(text: str) -> np.ndarray:
    values = np.zeros(len(text), np.int64)
    for m in _INDENTED_LINE.finditer(text):
        blanks = m.group(1)
        start, stop = m.start(1), m.end(1)
        if "\t" in blanks:
            widths, width = [], 0
            for c in blanks:
                width = width + 1 if c == " " else (width // 8 + 1) * 8
                widths.append(width)
            values[start:stop] = widths
        else:
            width = stop - start
            values[start:stop] = np.arange(1, width + 1)
        values[stop:m.end()] = width
    return values
