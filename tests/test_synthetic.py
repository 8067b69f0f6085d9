"""The bundled corpus: reproducible, and its ground truth agrees with a plain re-reading of the text."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from charrnn import synthetic

REPO = Path(__file__).resolve().parents[1]
CORPUS_PATH = REPO / "corpora" / "synthetic_prose.txt"
MAKE_CORPUS = REPO / "corpora" / "make_corpus.py"


@pytest.fixture(scope="module")
def corpus() -> synthetic.AnnotatedText:
    return synthetic.generate()


@pytest.fixture(scope="module")
def sample() -> synthetic.AnnotatedText:
    return synthetic.generate(20_000, seed=7)


def reparse(text: str) -> dict[str, np.ndarray]:
    """Ground truth recomputed from the text alone, the obvious way.

    Double quotes toggle on every ". A ' between two letters is an apostrophe (don't, Émile's); any other
    ' toggles a single-quoted span. Brackets are counted; columns restart after each newline.
    """
    openers = {"(": "paren_depth", "[": "square_depth", "{": "curly_depth"}
    closers = {")": "paren_depth", "]": "square_depth", "}": "curly_depth"}
    depth = dict.fromkeys(openers.values(), 0)
    in_double = in_single = False
    column = 0
    rows = []
    for t, char in enumerate(text):
        if char == '"':
            in_double = not in_double
        elif char == "'":
            before = text[t - 1] if t > 0 else " "
            after = text[t + 1] if t + 1 < len(text) else " "
            if not (before.isalpha() and after.isalpha()):
                in_single = not in_single
        elif char in openers:
            depth[openers[char]] += 1
        elif char in closers:
            depth[closers[char]] -= 1
        column = 0 if char == "\n" else column + 1
        rows.append((in_double, in_single, *depth.values(), column))
    table = np.array(rows, dtype=np.int64).reshape(-1, 6)
    truth = {"in_double_quotes": table[:, 0].astype(bool), "in_single_quotes": table[:, 1].astype(bool)}
    truth.update({name: table[:, i] for i, name in enumerate(depth, start=2)})
    truth["bracket_depth"] = table[:, 2:5].sum(axis=1)
    truth["column"] = table[:, 5]
    return truth


# ---------------------------------------------------------------------------------------------------------
# Reproducibility


def test_committed_corpus_is_the_generated_one(corpus):
    assert CORPUS_PATH.read_bytes() == corpus.text.encode("utf-8")


def test_generate_text_is_the_text_of_generate():
    assert synthetic.generate_text(3_000, seed=3) == synthetic.generate(3_000, seed=3).text


def test_deterministic_and_seeded():
    first, second = synthetic.generate(5_000), synthetic.generate(5_000)
    assert first.text == second.text
    for name in synthetic.TRUTH_FIELDS:
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert synthetic.generate(5_000, seed=synthetic.DEFAULT_SEED + 1).text != first.text


def test_stops_at_the_end_of_the_paragraph_that_reaches_num_chars():
    for num_chars in (1, 500, 4_321):
        text = synthetic.generate_text(num_chars)
        assert len(text) >= num_chars
        assert text.endswith("\n") and not text.endswith("\n\n")
        without_last_paragraph = text[: text.rstrip("\n").rfind("\n\n") + 1]
        assert len(without_last_paragraph) < num_chars


def test_generator_imports_nothing_heavy():
    tree = ast.parse((REPO / "charrnn" / "synthetic.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "dataclasses", "random", "numpy"}


# ---------------------------------------------------------------------------------------------------------
# Ground truth


def test_shapes_and_dtypes(sample):
    n = len(sample.text)
    assert len(sample) == n
    for name in synthetic.TRUTH_FIELDS:
        array = getattr(sample, name)
        assert array.shape == (n,), name
        assert array.dtype == (bool if name.startswith("in_") else np.int32), name


@pytest.mark.parametrize("which", ["sample", "corpus"])
def test_truth_agrees_with_reparse(which, request):
    annotated = request.getfixturevalue(which)
    expected = reparse(annotated.text)
    for name in synthetic.TRUTH_FIELDS:
        np.testing.assert_array_equal(getattr(annotated, name), expected[name], err_msg=name)


def test_truth_conventions_on_a_quote_and_a_bracket(sample):
    text = sample.text
    t = text.index('"')
    assert sample.in_double_quotes[t]  # the opening quote is inside
    close = text.index('"', t + 1)
    assert sample.in_double_quotes[close - 1] and not sample.in_double_quotes[close]
    t = text.index("(")
    assert sample.paren_depth[t] == 1 and sample.paren_depth[t - 1] == 0
    assert sample.paren_depth[text.index(")", t)] == 0
    newline = text.index("\n")
    assert sample.column[newline] == 0 and sample.column[newline + 1] == 1
    assert sample.column[newline - 1] == newline


# ---------------------------------------------------------------------------------------------------------
# Structure


def test_lines_and_paragraphs(corpus):
    text = corpus.text
    lines = text.split("\n")[:-1]  # the text ends with its last line's newline
    assert max(len(line) for line in lines) <= synthetic.LINE_WIDTH
    assert max(len(line) for line in lines) >= synthetic.LINE_WIDTH - 4  # the lines are actually filled
    assert all(line == line.strip(" ") and "  " not in line for line in lines)
    assert "\t" not in text and "\r" not in text and "\ufeff" not in text
    assert "\n\n\n" not in text and not text.startswith("\n")
    paragraphs = text[:-1].split("\n\n")
    assert len(paragraphs) > 500 and all(paragraphs)
    assert sum(paragraph.count("\n") > 0 for paragraph in paragraphs) > len(paragraphs) / 2


def test_brackets_balanced_and_nested(corpus):
    for name in ("paren_depth", "square_depth", "curly_depth", "bracket_depth"):
        depth = getattr(corpus, name)
        assert depth.min() == 0 and depth[-1] == 0, name
        assert depth.max() >= 1, name
    assert corpus.bracket_depth.max() >= 3
    assert (corpus.bracket_depth >= 3).sum() > 1_000


def test_quotes(corpus):
    text = corpus.text
    fraction = corpus.in_double_quotes.mean()
    assert 0.35 <= fraction <= 0.50
    newlines = np.array([char == "\n" for char in text])
    assert (newlines & corpus.in_double_quotes).sum() > 500  # quotes often span a wrapped line
    # Single-quoted spans exist and sit inside double quotes; apostrophes stand outside them.
    assert corpus.in_single_quotes.sum() > 500
    assert not (corpus.in_single_quotes & ~corpus.in_double_quotes).any()
    apostrophes = [
        t for t, char in enumerate(text)
        if char == "'" and text[t - 1].isalpha() and text[t + 1].isalpha()
    ]  # fmt: skip
    assert len(apostrophes) > 1_000
    assert not corpus.in_single_quotes[apostrophes].all()


def test_vocabulary(corpus):
    text = corpus.text
    assert any(ord(char) > 127 for char in text)
    for needed in ("Zoë", "Émile", "Anaïs", "—", "…", "?", "!", "don't", "it's"):
        assert needed.lower() in text.lower(), needed
    assert 60 <= len(set(text)) <= 90


# ---------------------------------------------------------------------------------------------------------
# The script


def run_script(*args: str) -> None:
    subprocess.run([sys.executable, str(MAKE_CORPUS), *args], cwd=REPO, check=True, capture_output=True)


def test_make_corpus_writes_the_text(tmp_path):
    out = tmp_path / "corpus.txt"
    run_script("--num-chars", "3000", "--output", str(out))
    assert out.read_bytes() == synthetic.generate_text(3_000).encode("utf-8")


def test_make_corpus_writes_the_truth(tmp_path):
    out = tmp_path / "truth.tsv"
    run_script("--num-chars", "3000", "--truth", str(out))
    annotated = synthetic.generate(3_000)
    rows = out.read_text(encoding="utf-8").split("\n")
    assert rows[-1] == ""
    header, rows = rows[0].split("\t"), [row.split("\t") for row in rows[1:-1]]
    assert header == ["offset", "char", *synthetic.TRUTH_FIELDS]
    assert len(rows) == len(annotated.text)
    unescape = {"\\n": "\n", "\\t": "\t", "\\r": "\r", "\\\\": "\\"}
    assert "".join(unescape.get(row[1], row[1]) for row in rows) == annotated.text
    assert [int(row[0]) for row in rows] == list(range(len(rows)))
    for i, name in enumerate(synthetic.TRUTH_FIELDS, start=2):
        np.testing.assert_array_equal([int(row[i]) for row in rows], getattr(annotated, name), err_msg=name)
