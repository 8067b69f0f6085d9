"""HTML pages: corpus text is escaped, the pieces draw what they should, and the inspect-cells page renders in a
real browser with nothing executed."""

from html.parser import HTMLParser
import re

import jax

import pytest

from charrnn import data, features, html, inspection, model
from charrnn.config import ModelConfig

HOSTILE = '<script>document.title="pwned"</script> <img src=x onerror="document.title=1"> & "quotes" \'here\'\n'


class Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, d):
        self.text.append(d)


def parse(page):
    parser = Elements()
    parser.feed(page)
    return parser


@pytest.fixture(scope="module")
def page():
    text = (HOSTILE + "a (b [c] d) e\n") * 30
    vocab = data.Vocabulary.from_text(text)
    config = ModelConfig(vocab_size=len(vocab), cell="gru", hidden_size=8, num_layers=2, embedding_size=4)
    params = model.init(jax.random.key(0), config)
    report = inspection.inspect(params, config, vocab, text, features.builtin_features(text), checkpoint="<b>ckpt</b>",
                                source={"path": "<i>x</i>", "source": "<i>x</i>"}, top=2, ablation_chars=300,
                                gradients=True)
    return html.inspection_page(report)


def test_corpus_and_user_text_is_escaped(page):
    parsed = parse(page)
    tags = {tag for tag, _ in parsed.tags}
    assert "script" not in tags and "img" not in tags and "i" not in tags and "b" in tags  # <b> only from the page
    assert not any("onerror" in attrs for _, attrs in parsed.tags)
    text = "".join(parsed.text)
    assert "<script>document.title" in text  # shown as text
    assert ">&lt;</span>" in page and ">&amp;</span>" in page and ">&quot;</span>" in page  # every character escaped
    assert "<b>ckpt</b>" in text and "<i>x</i>" in text


def test_page_is_self_contained(page):
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page and "@import" not in page


def test_page_has_scores_excerpts_saturation_and_gradients(page):
    parsed = parse(page)
    assert sum(1 for tag, _ in parsed.tags if tag == "svg") == 3  # two layers of gates + the gradient chart
    assert sum(1 for tag, attrs in parsed.tags if tag == "div" and attrs.get("class") == "excerpt") >= 3
    assert "Gate saturation" in page and "Gradient reach" in page and "<table>" in page
    assert "One unit or many?" in page and "best single unit" in page  # the linear probes


def test_colours_run_from_blue_through_white_to_red():
    assert html.activation_colour(0.0) == "#ffffff"
    assert html.activation_colour(1.0) == "#d62728" and html.activation_colour(5.0) == "#d62728"
    assert html.activation_colour(-1.0) == "#1f77b4"
    assert html.standardized([1.0, 3.0, 5.0], 3.0, 1.0) == [-1.0, 0.0, 1.0]


def test_line_chart_skips_points_it_cannot_draw():
    svg = html.line_chart({"a": [1.0, float("nan"), 0.01, 0.0]}, "x", "y", "t", log_y=True)
    points = re.search(r'points="([^"]+)"', svg).group(1).split()
    assert len(points) == 2


def test_page_renders_in_a_real_browser(page, tmp_path, chromium):
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    dom = chromium(path.as_uri(), "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = parse(dom.stdout)
    assert "script" not in {tag for tag, _ in rendered.tags}
    assert "<title>charrnn inspect-cells</title>" in dom.stdout  # no injected script changed it
    assert "<script>document.title" in "".join(rendered.text)
    assert not re.search(r"Uncaught|CONSOLE.*[Ee]rror", dom.stderr)
    shot = tmp_path / "shot.png"
    result = chromium(path.as_uri(), f"--screenshot={shot}", "--window-size=1200,1600")
    assert result.returncode == 0 and shot.stat().st_size > 20_000  # a page with content, not a blank one
