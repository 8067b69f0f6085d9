"""A deterministic, prose-like English corpus that knows its own structure.

The bundled corpus (``corpora/synthetic_prose.txt``) is made here. A small grammar writes paragraphs of
narration and quoted dialogue, with parenthesised asides that nest square brackets and curly braces, and
wraps them greedily at `LINE_WIDTH` columns. Because the grammar builds the text piece by piece, it tags
every character with the state a left-to-right reader is in, which gives per-character ground truth for
looking for interpretable hidden units::

    corpus = generate()                 # the bundled corpus: about 350,000 characters
    corpus.text                         # str, N characters, ends with exactly one "\\n"
    corpus.in_double_quotes             # (N,) bool
    corpus.bracket_depth                # (N,) int32

Conventions (the value at position t is the state *after* reading character t, as a recurrent network
has it after consuming t):

- ``in_double_quotes[t]``: True from the opening ``"`` itself up to, but not including, the closing
  ``"``; after reading the closing quote the reader is outside again, so it is False.
- ``in_single_quotes[t]``: the same for single-quoted spans (``'never again'``), which only ever occur
  inside double quotes. Apostrophes of contractions and possessives (don't, Émile's) are not quotes.
- ``paren_depth``, ``square_depth``, ``curly_depth``: how many ``(``, ``[``, ``{`` are open after reading t;
  an opening bracket counts at its own position, a closing one is already subtracted at its own position.
  ``bracket_depth`` is their sum. Brackets and quotes always nest properly and never cross a paragraph.
- ``column[t]``: characters since the last newline, counting t itself; a ``"\\n"`` has column 0, so
  ``"ab\\ncd"`` has columns ``[1, 2, 0, 1, 2]``.

Text layout: paragraphs are separated by one blank line; lines are at most `LINE_WIDTH` characters and
only ever break at a space (no word is split, no hyphenation); there are no tabs, no trailing spaces and
no double spaces. Only `random.Random` draws with ``random()``, ``randrange()`` and ``choice()`` over
tuples are used, so the output is the same on every machine and Python >= 3.10.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np

DEFAULT_SEED = 2015
# Narrow, like a newspaper column. Where a line breaks then matters for one character in 30, so a model has a
# reason to count the position in the line early in training: with 36 columns the default model grows a
# column unit (|Spearman| 0.92) in a ten-minute run; with 64 it did not (0.46) in the same time.
LINE_WIDTH = 36
DEFAULT_NUM_CHARS = 350_000
MAX_BRACKET_DEPTH = 4

# Names of the per-character ground-truth arrays of `AnnotatedText`, in a fixed order.
TRUTH_FIELDS = (
    "in_double_quotes",
    "in_single_quotes",
    "paren_depth",
    "square_depth",
    "curly_depth",
    "bracket_depth",
    "column",
)


@dataclasses.dataclass(frozen=True, eq=False)
class AnnotatedText:
    """A text and its per-character ground truth; every array has shape (N,) with N = len(text).

    See the module docstring for the conventions (state after reading character t).
    """

    text: str
    in_double_quotes: np.ndarray  # (N,) bool
    in_single_quotes: np.ndarray  # (N,) bool
    paren_depth: np.ndarray  # (N,) int32
    square_depth: np.ndarray  # (N,) int32
    curly_depth: np.ndarray  # (N,) int32
    bracket_depth: np.ndarray  # (N,) int32: paren + square + curly
    column: np.ndarray  # (N,) int32: 1-based column, 0 on "\n"

    def __len__(self) -> int:
        return len(self.text)


def generate(num_chars: int = DEFAULT_NUM_CHARS, seed: int = DEFAULT_SEED) -> AnnotatedText:
    """Generate the corpus with its ground truth.

    Paragraphs are written until the text (blank-line separators and final newline included) has at
    least `num_chars` characters; generation stops at the end of the paragraph that gets there, so the
    text may be a little longer than `num_chars`. It ends with exactly one ``"\\n"``.
    """
    rng = random.Random(seed)
    texts: list[str] = []
    states: list[np.ndarray] = []
    columns: list[np.ndarray] = []
    length = 0
    while length < num_chars:
        text, state, column = _layout(_paragraph(rng))
        if texts:  # the blank line before every paragraph but the first
            _append_newline(texts, states, columns)
            length += 1
        texts.append(text)
        states.append(state)
        columns.append(column)
        _append_newline(texts, states, columns)  # the end of its last line
        length += len(text) + 1

    state = np.concatenate(states)
    paren, square, curly = (state[:, _FIELD[k]] for k in "([{")
    return AnnotatedText(
        text="".join(texts),
        in_double_quotes=state[:, _FIELD['"']].astype(bool),
        in_single_quotes=state[:, _FIELD["'"]].astype(bool),
        paren_depth=paren,
        square_depth=square,
        curly_depth=curly,
        bracket_depth=paren + square + curly,
        column=np.concatenate(columns),
    )


def generate_text(num_chars: int = DEFAULT_NUM_CHARS, seed: int = DEFAULT_SEED) -> str:
    """Just the text of `generate(num_chars, seed)`."""
    return generate(num_chars, seed).text


def _append_newline(texts: list, states: list, columns: list) -> None:
    """A newline around paragraphs: outside every quote and bracket, at column 0."""
    texts.append("\n")
    states.append(np.zeros((1, _NUM_FIELDS), np.int32))
    columns.append(np.zeros(1, np.int32))


# ---------------------------------------------------------------------------------------------------------
# Building a paragraph: pieces of text tagged with the reader's state


# Which slot of the state vector each quote or bracket character drives.
_FIELD = {'"': 0, "'": 1, "(": 2, "[": 3, "{": 4}
_NUM_FIELDS = 5
_CLOSING = {"(": ")", "[": "]", "{": "}"}


class _Builder:
    """Accumulates one paragraph as a list of pieces, each tagged with the state after its characters.

    Every piece has a constant state: quotes and brackets are pieces of their own, and words, spaces and
    punctuation do not change the state. The builder also handles spacing and sentence capitalisation,
    and remembers where it put each space, since those are the only places a line may wrap.
    """

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.states: list[tuple[int, ...]] = []
        self.breaks: list[int] = []  # offsets of the spaces between words
        self.length = 0
        self._state = [0] * _NUM_FIELDS
        self._space_pending = False
        self._capitalize = True

    def _emit(self, piece: str) -> None:
        self.pieces.append(piece)
        self.states.append(tuple(self._state))
        self.length += len(piece)

    def _space(self) -> None:
        if self._space_pending:
            self.breaks.append(self.length)
            self._emit(" ")
        self._space_pending = False

    def word(self, word: str) -> None:
        """A word, after a space unless it directly follows an opening quote, bracket or dash."""
        self._space()
        if self._capitalize:
            word = word[0].upper() + word[1:]
            self._capitalize = False
        self._emit(word)
        self._space_pending = True

    def words(self, phrase: str) -> None:
        for word in phrase.split(" "):
            self.word(word)

    def punct(self, mark: str) -> None:
        """Punctuation that sticks to the preceding word: , . ? ! … ; :"""
        self._emit(mark)
        self._space_pending = True

    def end_sentence(self, mark: str) -> None:
        self.punct(mark)
        self._capitalize = True

    def capitalize_next(self, flag: bool = True) -> None:
        self._capitalize = flag

    def dash(self) -> None:
        """An unspaced em dash, as in "the road—or what was left of it—ran on"."""
        self._emit("—")
        self._space_pending = False

    def open_quote(self, mark: str) -> None:
        self._space()
        self._state[_FIELD[mark]] = 1
        self._emit(mark)

    def close_quote(self, mark: str) -> None:
        self._state[_FIELD[mark]] = 0
        self._emit(mark)
        self._space_pending = True

    def open_bracket(self, mark: str) -> None:
        self._space()
        self._state[_FIELD[mark]] += 1
        self._emit(mark)

    def close_bracket(self, mark: str) -> None:
        self._state[_FIELD[mark]] -= 1
        self._emit(_CLOSING[mark])
        self._space_pending = True

    def finish(self) -> tuple[str, np.ndarray, list[int]]:
        """(text, per-character state (n, 5) int32, offsets of the spaces where a line may wrap)."""
        assert not any(self._state), "a quote or bracket was left open"
        lengths = [len(piece) for piece in self.pieces]
        state = np.array(self.states, np.int32).reshape(-1, _NUM_FIELDS)
        return "".join(self.pieces), np.repeat(state, lengths, axis=0), self.breaks


def _layout(builder: _Builder) -> tuple[str, np.ndarray, np.ndarray]:
    """Wrap a paragraph greedily at LINE_WIDTH: (text, state (n, 5), column (n,)).

    Fill each line with as many words as fit and turn the space before the first word that does not
    into a newline. Quote and bracket state is unchanged by that; columns follow from the chosen lines.
    """
    text, state, breaks = builder.finish()
    word_ends = breaks + [len(text)]
    newlines = []
    line_length = word_ends[0]
    for space, word_end in zip(breaks, word_ends[1:]):
        word_length = word_end - space - 1
        if line_length + 1 + word_length > LINE_WIDTH:
            newlines.append(space)
            line_length = word_length
        else:
            line_length += 1 + word_length

    chars = list(text)
    column = np.zeros(len(text), np.int32)
    line_start = 0
    for line_end in newlines + [len(text)]:
        column[line_start:line_end] = np.arange(1, line_end - line_start + 1)
        if line_end < len(text):
            chars[line_end] = "\n"
        line_start = line_end + 1
    return "".join(chars), state, column


# ---------------------------------------------------------------------------------------------------------
# Vocabulary (tuples, never sets: `choice` over them is reproducible)

_NAMES = (
    "Anaïs", "Zoë", "Émile", "Léa", "Søren", "Inès", "Marta", "Tomas", "Ingrid", "Rafael",
    "Noor", "Jonah", "Oskar", "Priya", "Felix", "Mireille", "Bram", "Ada", "Kofi", "Hana",
)  # fmt: skip
_PEOPLE = (
    "stranger", "doctor", "teacher", "baker", "soldier", "sailor", "child", "sister", "brother",
    "mother", "father", "neighbour", "captain", "ferryman", "shepherd", "miller", "innkeeper",
    "priest", "widow", "girl", "boy", "farmer", "guard", "clerk",
)  # fmt: skip
_THINGS = (
    "road", "river", "house", "door", "window", "lantern", "map", "key", "letter", "garden", "bridge",
    "mill", "tower", "forest", "field", "hill", "village", "harbour", "boat", "ship", "station",
    "train", "clock", "bell", "candle", "table", "chair", "book", "coat", "box", "well", "wall",
    "gate", "path", "stone", "fire", "cellar", "kitchen", "market", "orchard", "lake", "shore",
    "valley", "mountain", "cliff", "island", "library", "cart", "ribbon", "mirror", "photograph",
    "coin", "compass", "umbrella", "envelope", "staircase", "attic", "chimney", "note", "sign",
    "basket", "rope", "ladder", "fence", "barn", "chapel", "lighthouse", "kettle", "blanket",
    "notebook", "whistle", "drawer", "trunk", "oven", "anchor", "inkwell",
)  # fmt: skip
_SCENE_NOUNS = (
    "wind", "rain", "snow", "storm", "fog", "light", "smoke", "lantern", "bell", "door", "clock",
    "candle", "fire", "gate", "window", "boat", "kettle", "shutter", "river", "sky", "moon",
)  # fmt: skip
_WRITINGS = ("sign", "letter", "note", "map", "envelope", "door", "wall", "notebook", "photograph")
_ADJECTIVES = (
    "old", "young", "narrow", "wide", "empty", "quiet", "broken", "heavy", "small", "large", "dark",
    "bright", "cold", "warm", "wet", "dry", "strange", "familiar", "red", "blue", "green", "grey",
    "golden", "silver", "pale", "tall", "crooked", "distant", "hidden", "wooden", "iron", "rusty",
    "dusty", "tired", "patient", "nervous", "gentle", "stubborn", "silent", "ancient", "lonely",
    "crowded", "muddy", "frozen", "bitter", "faint", "hollow", "unlit", "elegant", "ordinary",
)  # fmt: skip
_COMPARATIVES = (
    "longer", "older", "colder", "darker", "stranger", "closer", "heavier", "quieter", "deeper",
    "worse", "harder", "safer", "farther",
)  # fmt: skip
# (base, past, past participle)
_VERBS_TRANSITIVE = (
    ("open", "opened", "opened"), ("close", "closed", "closed"), ("find", "found", "found"),
    ("carry", "carried", "carried"), ("lose", "lost", "lost"), ("follow", "followed", "followed"),
    ("cross", "crossed", "crossed"), ("watch", "watched", "watched"), ("repair", "repaired", "repaired"),
    ("paint", "painted", "painted"), ("drop", "dropped", "dropped"), ("hide", "hid", "hidden"),
    ("hold", "held", "held"), ("leave", "left", "left"), ("keep", "kept", "kept"),
    ("reach", "reached", "reached"), ("visit", "visited", "visited"), ("count", "counted", "counted"),
    ("notice", "noticed", "noticed"), ("borrow", "borrowed", "borrowed"), ("wrap", "wrapped", "wrapped"),
    ("lift", "lifted", "lifted"), ("push", "pushed", "pushed"), ("pull", "pulled", "pulled"),
    ("mend", "mended", "mended"), ("study", "studied", "studied"), ("search", "searched", "searched"),
    ("climb", "climbed", "climbed"), ("guard", "guarded", "guarded"), ("sell", "sold", "sold"),
    ("buy", "bought", "bought"), ("remember", "remembered", "remembered"),
    ("forget", "forgot", "forgotten"), ("draw", "drew", "drawn"), ("write", "wrote", "written"),
    ("bring", "brought", "brought"), ("take", "took", "taken"), ("break", "broke", "broken"),
    ("clean", "cleaned", "cleaned"), ("describe", "described", "described"),
    ("steal", "stole", "stolen"), ("burn", "burned", "burned"),
)  # fmt: skip
# (base, past)
_VERBS_INTRANSITIVE = (
    ("wait", "waited"), ("laugh", "laughed"), ("sleep", "slept"), ("shiver", "shivered"),
    ("listen", "listened"), ("hesitate", "hesitated"), ("nod", "nodded"), ("sigh", "sighed"),
    ("return", "returned"), ("arrive", "arrived"), ("stay", "stayed"), ("pause", "paused"),
    ("smile", "smiled"), ("wander", "wandered"), ("shrug", "shrugged"), ("frown", "frowned"),
    ("turn", "turned"), ("stop", "stopped"), ("sing", "sang"), ("whistle", "whistled"),
    ("kneel", "knelt"), ("run", "ran"), ("walk", "walked"), ("hurry", "hurried"), ("sit", "sat"),
    ("stand", "stood"), ("read", "read"), ("work", "worked"), ("rest", "rested"), ("pray", "prayed"),
)  # fmt: skip
_SCENE_VERBS = (
    "rattled", "creaked", "glowed", "flickered", "fell", "rose", "shook", "faded", "swung", "burned",
    "cracked", "rang", "trembled", "dripped", "moved", "settled", "shone", "groaned", "sank", "drifted",
)  # fmt: skip
_ADVERBS = (
    "quietly", "slowly", "suddenly", "carefully", "softly", "gently", "briefly", "calmly", "eagerly",
    "quickly", "warily", "patiently", "anxiously", "silently", "stubbornly", "gladly", "loudly",
    "nervously", "politely", "wearily", "again", "twice", "at last", "for a while", "once more",
)  # fmt: skip
_OPENERS = (
    "at dawn", "by evening", "later", "afterwards", "meanwhile", "for a long time", "in the morning",
    "that night", "without a word", "even then", "once again", "in the end", "at first",
    "after a while", "by then", "the next day", "before long", "all winter",
)  # fmt: skip
_PREPOSITIONS = (
    "near", "behind", "beside", "under", "across", "beyond", "along", "toward", "through", "inside",
    "outside", "past", "above", "below", "around", "into", "over", "from", "against", "by",
)  # fmt: skip
_DETERMINERS = ("the", "the", "the", "the", "a", "a", "that", "her", "his", "their")
_DIALOGUE_DETERMINERS = ("the", "the", "the", "a", "this", "that", "my", "your", "our")
_PRONOUNS = ("she", "he", "they")
_DIALOGUE_SUBJECTS = ("I", "I", "we", "we", "you", "they")
_MODALS = (
    "should", "could", "must", "will", "can't", "won't", "shouldn't", "might", "have to", "ought to",
)  # fmt: skip
_INTERJECTIONS = ("well", "listen", "oh", "no", "yes", "honestly", "look")
_QUOTED_PHRASES = (
    "never again", "keep out", "not tonight", "trust no one", "come home", "too late",
    "mind the step", "don't look back", "it isn't yours", "we'll see",
)  # fmt: skip
_ASIDE_LEAVES = (
    "in haste", "years ago", "twice", "or so we thought", "of course", "allegedly", "at least once",
    "in winter", "by candlelight", "long ago", "more or less", "if memory serves",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Phrases

def _article_for(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(b: _Builder, r: random.Random, nouns=_THINGS, determiners=_DETERMINERS) -> None:
    """[determiner | Name's] [adjective] noun."""
    noun = r.choice(nouns)
    adjective = r.choice(_ADJECTIVES) if r.random() < 0.4 else None
    if r.random() < 0.08:
        b.word(r.choice(_NAMES) + "'s")
    else:
        determiner = r.choice(determiners)
        b.word(_article_for(adjective or noun) if determiner == "a" else determiner)
    if adjective:
        b.word(adjective)
    b.word(noun)


def _person(b: _Builder, r: random.Random) -> None:
    """A name, or "the" [adjective] person."""
    if r.random() < 0.75:
        b.word(r.choice(_NAMES))
    else:
        _noun_phrase(b, r, _PEOPLE, ("the",))


def _subject(b: _Builder, r: random.Random) -> None:
    if r.random() < 0.8:
        _person(b, r)
    else:
        b.word(r.choice(_PRONOUNS))


def _maybe_prepositional(b: _Builder, r: random.Random, p: float = 0.5) -> None:
    if r.random() < p:
        b.word(r.choice(_PREPOSITIONS))
        _noun_phrase(b, r)


def _object(b: _Builder, r: random.Random) -> None:
    if r.random() < 0.85:
        _noun_phrase(b, r)
    else:
        _person(b, r)


# ---------------------------------------------------------------------------------------------------------
# Asides: ( ... [ ... { ... } ... ] ... ), nested up to MAX_BRACKET_DEPTH

# Chance of opening a deeper aside at a nesting point, by current depth; it falls so deep ones are rare.
_NEST_PROBABILITY = (0.0, 0.5, 0.4, 0.3)


def _aside(b: _Builder, r: random.Random, depth: int = 1, bracket: str = "(") -> None:
    """A bracketed aside at nesting `depth` (1 = outermost); outermost ones are parenthesised."""
    b.open_bracket(bracket)
    body = r.choice(_OUTER_ASIDES if depth == 1 else _INNER_ASIDES)
    body(b, r, depth, bracket)
    b.close_bracket(bracket)


def _nest(b: _Builder, r: random.Random, depth: int, bracket: str) -> None:
    """Maybe open a deeper aside here, of a bracket kind different from the enclosing one."""
    if depth < MAX_BRACKET_DEPTH and r.random() < _NEST_PROBABILITY[depth]:
        _aside(b, r, depth + 1, r.choice(tuple(k for k in "([{" if k != bracket)))


def _aside_noun(b, r, depth, bracket):
    _noun_phrase(b, r)
    _nest(b, r, depth, bracket)


def _aside_as_shown(b, r, depth, bracket):  # as the map [drawn {in haste} by Émile] showed
    b.word("as")
    _aside_noun(b, r, depth, bracket)
    b.words(r.choice(("showed", "suggested", "made clear", "had warned")))


def _aside_or_so(b, r, depth, bracket):
    b.words("or so")
    b.word(r.choice(_NAMES))
    b.words(r.choice(("claimed", "insisted", "swore", "said later")))


def _aside_which(b, r, depth, bracket):  # which Zoë had hidden [behind the well]
    b.word("which")
    b.word(r.choice(_NAMES))
    b.word("had")
    b.word(r.choice(_VERBS_TRANSITIVE)[2])
    _nest(b, r, depth, bracket)
    if r.random() < 0.4:
        b.words(r.choice(("long before", "years ago", "the week before")))


def _aside_see(b, r, depth, bracket):
    b.word("see")
    _aside_noun(b, r, depth, bracket)


def _aside_the_one(b, r, depth, bracket):
    b.words("the one")
    b.word(r.choice(_PREPOSITIONS))
    _aside_noun(b, r, depth, bracket)


def _aside_according(b, r, depth, bracket):
    b.words("according to")
    _aside_noun(b, r, depth, bracket)


def _aside_not(b, r, depth, bracket):
    b.word("not")
    _aside_noun(b, r, depth, bracket)
    b.punct(",")
    b.words("of course")


def _aside_participle(b, r, depth, bracket):  # drawn {in haste} by Émile
    b.word(r.choice(_VERBS_TRANSITIVE)[2])
    _nest(b, r, depth, bracket)
    b.word("by")
    b.word(r.choice(_NAMES))


def _aside_leaf(b, r, depth, bracket):
    b.words(r.choice(_ASIDE_LEAVES))


def _aside_adjective_one(b, r, depth, bracket):
    b.words("the " + r.choice(_ADJECTIVES) + " one")


_OUTER_ASIDES = (
    _aside_as_shown, _aside_or_so, _aside_which, _aside_see, _aside_the_one, _aside_according,
    _aside_not, _aside_participle,
)  # fmt: skip
_INNER_ASIDES = (
    _aside_participle, _aside_participle, _aside_leaf, _aside_leaf, _aside_adjective_one,
    _aside_the_one, _aside_see, _aside_noun,
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Narrative sentences (past tense). Each writes its words and returns its final mark without writing it,
# so that the caller can put an aside or a closing comma before it.

def _clause_action(b, r):
    _subject(b, r)
    b.word(r.choice(_VERBS_TRANSITIVE)[1])
    _object(b, r)
    _maybe_prepositional(b, r)


def _clause_still(b, r):
    _subject(b, r)
    b.word(r.choice(_VERBS_INTRANSITIVE)[1])
    if r.random() < 0.5:
        b.words(r.choice(_ADVERBS))
    _maybe_prepositional(b, r, 0.4)


def _clause_scene(b, r):
    _noun_phrase(b, r, _SCENE_NOUNS, ("the",))
    b.word(r.choice(_SCENE_VERBS))
    _maybe_prepositional(b, r, 0.4)


def _clause(b, r):
    r.choice((_clause_action, _clause_action, _clause_still, _clause_scene))(b, r)


def _narrate_simple(b, r):
    _clause(b, r)
    return "."


def _narrate_fronted(b, r):  # At dawn, Zoë crossed the bridge.
    b.words(r.choice(_OPENERS))
    b.punct(",")
    _clause(b, r)
    return "."


def _narrate_compound(b, r):
    _clause(b, r)
    b.punct(",")
    b.word(r.choice(("and", "but", "so")))
    _clause(b, r)
    return "."


def _narrate_when(b, r):
    b.word(r.choice(("when", "before", "after", "while", "because")))
    _clause(b, r)
    b.punct(",")
    _clause(b, r)
    return "."


def _narrate_dash(b, r):  # Émile took the lantern—the old one—and waited.
    _subject(b, r)
    b.word(r.choice(_VERBS_TRANSITIVE)[1])
    _noun_phrase(b, r)
    b.dash()
    b.words("the " + r.choice(_ADJECTIVES) + " one")
    b.dash()
    b.word("and")
    b.word(r.choice(_VERBS_INTRANSITIVE)[1])
    return "."


def _narrate_trailing(b, r):  # Noor waited by the gate…
    _clause_still(b, r)
    return "…"


def _narrate_question(b, r):  # Who could blame Zoë now?
    before, after = r.choice(
        (("who could blame", "now"), ("what else could", "do"), ("why would anyone doubt", "now"))
    )
    b.words(before)
    b.word(r.choice(_NAMES))
    b.word(after)
    return "?"


def _narrate_with_quote(b, r):  # Zoë whispered "I can't stay here" and turned away.
    """A short quote inside a narration sentence, so quotes are not only where dialogue paragraphs are."""
    _subject(b, r)
    b.word(r.choice(("whispered", "said", "muttered", "called", "shouted", "wrote", "read out")))
    b.capitalize_next()
    b.open_quote('"')
    mark = r.choice(_SPEECH)(b, r)
    if mark != ".":
        b.punct(mark)
    b.close_quote('"')
    b.word("and")
    b.word(r.choice(_VERBS_INTRANSITIVE)[1])
    if r.random() < 0.5:
        b.words(r.choice(_ADVERBS))
    return "."


_NARRATION = (
    _narrate_simple, _narrate_simple, _narrate_simple, _narrate_fronted, _narrate_fronted,
    _narrate_compound, _narrate_compound, _narrate_when, _narrate_dash, _narrate_trailing,
    _narrate_question, _narrate_with_quote, _narrate_with_quote,
)  # fmt: skip


def _narrative_sentence(b: _Builder, r: random.Random, p_aside: float = 0.2) -> None:
    mark = r.choice(_NARRATION)(b, r)
    if r.random() < p_aside:
        _aside(b, r)
    b.end_sentence(mark)


def _standalone_aside(b: _Builder, r: random.Random) -> None:
    """A whole sentence in parentheses, its full stop inside: (Nobody asked why.)"""
    b.open_bracket("(")
    b.capitalize_next()
    if r.random() < 0.5:
        b.words(r.choice(("nobody asked why", "it was not the first time", "nobody believed it")))
    else:
        _clause(b, r)
    if r.random() < 0.3:
        _aside(b, r, 2, r.choice(("[", "{")))
    b.end_sentence(".")
    b.close_bracket("(")


# ---------------------------------------------------------------------------------------------------------
# Dialogue sentences (present tense, first and second person, contractions)

def _speak_modal(b, r):  # We should take the lantern before dark.
    if r.random() < 0.8:
        b.word(r.choice(_DIALOGUE_SUBJECTS))
    else:
        b.word(r.choice(_NAMES))
    b.words(r.choice(_MODALS))
    b.word(r.choice(_VERBS_TRANSITIVE)[0])
    _noun_phrase(b, r, determiners=_DIALOGUE_DETERMINERS)
    if r.random() < 0.5:
        b.words(r.choice(("before dark", "tonight", "tomorrow", "at once", "first", "by morning")))
    return "."


def _speak_past(b, r):  # I found your key near the well.
    b.word(r.choice(_DIALOGUE_SUBJECTS))
    b.word(r.choice(_VERBS_TRANSITIVE)[1])
    _noun_phrase(b, r, determiners=_DIALOGUE_DETERMINERS)
    _maybe_prepositional(b, r)
    return "."


def _speak_unknown(b, r):  # I don't know where the key is.
    b.words(r.choice(("I don't know", "nobody knows", "I can't remember", "tell me")))
    choice = r.randrange(3)
    if choice == 0:
        b.word("where")
        _noun_phrase(b, r, determiners=_DIALOGUE_DETERMINERS)
        b.word("is")
    elif choice == 1:
        b.word("why")
        b.word(r.choice(_NAMES))
        b.word(r.choice(_VERBS_INTRANSITIVE)[1])
    else:
        b.word("who")
        b.word(r.choice(_VERBS_TRANSITIVE)[1])
        _noun_phrase(b, r, determiners=_DIALOGUE_DETERMINERS)
    return "."


def _speak_compare(b, r):  # The old road is longer than you think.
    _noun_phrase(b, r, determiners=_DIALOGUE_DETERMINERS)
    b.word(r.choice(("is", "was", "isn't", "wasn't")))
    b.word(r.choice(_COMPARATIVES))
    b.word("than")
    b.words(r.choice(("you think", "it looks", "last winter", "anyone remembers", "it used to be")))
    return "."


def _speak_state(b, r):  # It's too late for that.
    choice = r.randrange(5)
    if choice == 0:
        b.words("it's " + r.choice(("too late for that", "not far now", "colder tonight", "yours")))
    elif choice == 1:
        b.words("that's not what")
        b.word(r.choice(_NAMES))
        b.word("said")
    elif choice == 2:
        b.words("I'm not " + r.choice(_ADJECTIVES))
        b.punct(",")
        b.words("I'm just " + r.choice(("careful", "late", "curious", "busy", "thinking")))
    elif choice == 3:
        b.words(r.choice(("you're", "we're", "they're")) + " " + r.choice(_ADJECTIVES))
    else:
        b.words("there's")
        adjective_or_noun = r.choice(_ADJECTIVES)
        b.word(_article_for(adjective_or_noun))
        b.word(adjective_or_noun)
        b.word(r.choice(_THINGS))
        b.word(r.choice(_PREPOSITIONS))
        _noun_phrase(b, r, determiners=_DIALOGUE_DETERMINERS)
    return "."


def _speak_question(b, r):  # Did you see the lantern?
    choice = r.randrange(5)
    if choice == 0:
        b.words("did you " + r.choice(_VERBS_TRANSITIVE)[0])
        _noun_phrase(b, r, determiners=_DIALOGUE_DETERMINERS)
    elif choice == 1:
        b.words("where is")
        _noun_phrase(b, r, determiners=_DIALOGUE_DETERMINERS)
    elif choice == 2:
        b.words(r.choice(("why didn't you tell me", "what happens now", "are you sure", "isn't it late")))
    elif choice == 3:
        b.word("who")
        b.word(r.choice(_VERBS_TRANSITIVE)[1])
        _noun_phrase(b, r, determiners=_DIALOGUE_DETERMINERS)
    else:
        b.words("have you seen")
        b.word(r.choice(_NAMES))
    return "?"


def _speak_imperative(b, r):  # Don't touch the lantern!
    choice = r.randrange(4)
    if choice == 0:
        b.words("don't " + r.choice(_VERBS_TRANSITIVE)[0])
        _noun_phrase(b, r, determiners=_DIALOGUE_DETERMINERS)
    elif choice == 1:
        b.word(r.choice(_VERBS_TRANSITIVE)[0])
        _noun_phrase(b, r, determiners=_DIALOGUE_DETERMINERS)
        _maybe_prepositional(b, r)
    elif choice == 2:
        b.words(r.choice(("come back", "wait for me", "stay here", "hurry up", "let me see")))
    else:
        b.words("let's " + r.choice(_VERBS_TRANSITIVE)[0])
        _noun_phrase(b, r, determiners=_DIALOGUE_DETERMINERS)
        b.words(r.choice(("before dark", "before anyone notices", "while we can")))
    return "!" if r.random() < 0.6 else "."


def _speak_interrupted(b, r):  # I thought the map—never mind.
    b.words(r.choice(("I thought", "we could take", "if only", "you said")))
    _noun_phrase(b, r, determiners=_DIALOGUE_DETERMINERS)
    b.dash()
    b.words(r.choice(("never mind", "no, listen", "forget it", "oh, it doesn't matter")))
    return "."


def _single_quoted(b, r):
    """A short span in single quotes (always inside a double-quoted one)."""
    b.open_quote("'")
    if r.random() < 0.7:
        b.words(r.choice(_QUOTED_PHRASES))
    else:
        b.words(r.choice(("follow", "mind", "ask", "leave")) + " the")
        b.word(r.choice(_THINGS))
    b.close_quote("'")


def _speak_reported(b, r):  # She told me 'never again' and left.
    choice = r.randrange(5)
    if choice == 0:
        b.word(r.choice(_NAMES))
        b.words(r.choice(("told me", "only said", "kept saying")))
        _single_quoted(b, r)
        b.words("and " + r.choice(("left", "nothing more", "closed the door")))
    elif choice == 1:
        b.words("the " + r.choice(_WRITINGS) + " said")
        _single_quoted(b, r)
        b.punct(",")
        b.words("so we turned back")
    elif choice == 2:
        b.words("who wrote")
        _single_quoted(b, r)
        b.words("on the " + r.choice(_WRITINGS))
        return "?"
    elif choice == 3:
        b.words("why does everyone keep saying")
        _single_quoted(b, r)
        return "?"
    else:
        b.words("if you hear")
        _single_quoted(b, r)
        b.punct(",")
        b.word("run")
        return "!"
    return "."


_SPEECH = (
    _speak_modal, _speak_modal, _speak_past, _speak_past, _speak_unknown, _speak_compare,
    _speak_state, _speak_state, _speak_question, _speak_question, _speak_imperative,
    _speak_interrupted, _speak_reported,
)  # fmt: skip


def _spoken_sentence(b: _Builder, r: random.Random) -> str:
    """One sentence of dialogue, with its final mark left for the caller; returns that mark."""
    if r.random() < 0.12:
        b.word(r.choice(_INTERJECTIONS))
        b.punct("…" if r.random() < 0.25 else ",")
    mark = r.choice(_SPEECH)(b, r)
    if r.random() < 0.08:
        _aside(b, r)
    return mark


def _utterance(b: _Builder, r: random.Random, attributed: bool) -> None:
    """Inside double quotes: one to several sentences.

    When `attributed`, a "said X" follows the closing quote, so a final full stop becomes a comma.
    """
    count = r.choice((1, 1, 2, 2, 3, 3, 4, 5, 6))
    for i in range(count):
        mark = _spoken_sentence(b, r)
        if i == count - 1 and attributed:
            b.punct("," if mark == "." else mark)
        else:
            b.end_sentence(mark)


def _speech_verb(r: random.Random) -> str:
    return r.choice(("said", "said", "said", "replied", "whispered", "murmured", "added", "answered"))


def _quote(b: _Builder, r: random.Random, attributed: bool) -> None:
    b.open_quote('"')
    _utterance(b, r, attributed)
    b.close_quote('"')


# ---------------------------------------------------------------------------------------------------------
# Paragraphs

def _exchange(b: _Builder, r: random.Random) -> None:
    """Quoted speech with or without its speaker, in one of the usual arrangements."""
    form = r.randrange(4)
    if form == 0:  # "...," said Anaïs. "..."
        _quote(b, r, attributed=True)
        if r.random() < 0.5:
            b.word(_speech_verb(r))
            b.word(r.choice(_NAMES))
        else:
            b.word(r.choice(_NAMES))
            b.word(_speech_verb(r))
        b.end_sentence(".")
        if r.random() < 0.5:
            _quote(b, r, attributed=False)
    elif form == 1:  # Anaïs said, "..."
        _person(b, r)
        b.word(_speech_verb(r))
        b.punct(",")
        b.capitalize_next()
        _quote(b, r, attributed=False)
    elif form == 2:  # "...," said Anaïs, "and ..."
        _quote(b, r, attributed=True)
        b.word(_speech_verb(r))
        b.word(r.choice(_NAMES))
        b.punct(",")
        b.capitalize_next(False)  # the same sentence goes on inside the second quote
        _quote(b, r, attributed=False)
    else:  # "..."
        _quote(b, r, attributed=False)


def _dialogue_paragraph(b: _Builder, r: random.Random) -> None:
    """One to three exchanges, often with narration between them: being in a dialogue paragraph does not say
    whether the text is inside quotes; only the quotes themselves do."""
    if r.random() < 0.3:
        _narrative_sentence(b, r, p_aside=0.1)
    for i in range(r.choice((1, 1, 2, 2, 3))):
        if i:
            for _ in range(r.choice((0, 1, 1, 2))):
                _narrative_sentence(b, r, p_aside=0.1)
        _exchange(b, r)
    if r.random() < 0.25:
        _narrative_sentence(b, r, p_aside=0.1)


def _narrative_paragraph(b: _Builder, r: random.Random) -> None:
    for _ in range(r.randrange(2, 7)):
        if r.random() < 0.08:
            _standalone_aside(b, r)
        else:
            _narrative_sentence(b, r)


def _paragraph(r: random.Random) -> _Builder:
    b = _Builder()
    if r.random() < 0.45:
        _dialogue_paragraph(b, r)
    else:
        _narrative_paragraph(b, r)
    return b
