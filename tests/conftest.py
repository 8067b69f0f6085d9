"""What the tests share: a small corpus and tiny model options, running the command in-process, checking that an
error is one line, and a headless Chromium for checking HTML pages in a real browser."""

import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Union

import pytest
from click.testing import CliRunner

from charrnn.cli import main

def pytest_configure(config):
    """The fast suite (`-m "not slow"`) compiles hundreds of small programs, each run for a moment: there, XLA's
    backend optimisation passes cost more time than they save, so it runs without them (before any test module
    imports JAX; child processes inherit it). The results are the same; the whole suite keeps them, since its
    slow tests train real models."""
    if config.option.markexpr.replace(" ", "") == "notslow":
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_backend_optimization_level" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()


# 4,400 characters of text with accents, quotes, brackets and digits: 61 windows of 16 per epoch over 4 streams.
CORPUS_TEXT = (
    "The café opened at dawn — bread, coffee, and quiet talk.\n"
    'Zoë said: "Not yet!" (then laughed) 42 times?\n'
    "A quick brown fox jumps over the lazy dog; naïve—résumé.\n"
    "Pack my box with five dozen liquor jugs: 7 of 9 were empty.\n"
) * 20

# A model small enough to train in a second or two, and its windows.
TINY_MODEL = ["--hidden-size", "16", "--num-layers", "1", "--embedding-size", "8"]
TINY_WINDOWS = ["--seq-length", "16", "--batch-size", "4"]


def fast_first(cases, keep: int = 1) -> list:
    """Parameters for `pytest.mark.parametrize`: the first `keep` cases run in the fast suite, the others only
    in the whole one (marked slow). For exhaustive checks over cell kinds and shapes, where one case says the
    property holds and the rest say it holds everywhere."""
    return [case if i < keep else pytest.param(*(case if isinstance(case, tuple) else (case,)), marks=pytest.mark.slow)
            for i, case in enumerate(cases)]


def shouting_in_quotes(num_chars: int = 60_000, seed: int = 0) -> str:
    """Lower-case words outside double quotes, upper-case inside: to predict the case of the next word a model
    has to know whether it is inside quotes, so a trained model must keep that somewhere."""
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "said", "dog", "ran", "far", "away", "to", "sea"]
    parts, size = [], 0
    while size < num_chars:
        phrase = " ".join(rng.choice(words) for _ in range(rng.randrange(1, 6)))
        parts.append(f'"{phrase.upper()}" ' if rng.random() < 0.25 else phrase + " ")
        size += len(parts[-1])
    return "".join(parts)


def write_corpus(path: Path, text: str = CORPUS_TEXT) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def invoke(*args, **kwargs):
    """`charrnn ARGS` in this process (click's CliRunner); stdout and stderr apart."""
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def assert_one_line_error(result, *fragments, code: Union[int, tuple[int, ...]] = 1) -> str:
    """An in-process result is a user error: exit code `code` (1; 2 for a malformed command line or
    configuration file; or any of a tuple), no traceback, nothing on stdout, and one line on stderr starting
    with "error:" that names every fragment. Returns the line."""
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exc_info!r}\n{result.stderr}"
    assert result.exit_code in (code if isinstance(code, tuple) else (code,)), result.output
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    return assert_names(lines[0], *fragments)


def assert_names(line: str, *fragments) -> str:
    """`line` is an "error: ..." line naming every fragment."""
    assert line.startswith("error: ") and len(line) > len("error: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
]


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """run(url, *args) -> CompletedProcess: Chromium headless with a fresh profile and no network chatter.

    Skipped with the reason where no Chromium is installed (.ci/run installs Debian's `chromium`)."""
    binary = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if binary is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium); the HTML is checked in a real browser")
    profile = tmp_path_factory.mktemp("chromium-profile")

    def run(url, *args, timeout=90):
        return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
                              capture_output=True, text=True, timeout=timeout)

    return run
