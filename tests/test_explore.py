"""charrnn explore: the page builder (escaping, quantisation, the model's guesses, bad input) and, in a real
browser (Chromium driven by selenium through Debian's chromedriver), the page as a person uses it: a unit's
colours, arrow keys, Select and Match on a quoted span, a regex feature scored as inspect-cells scores it, no
network request and no console error.

One small LSTM is trained per module on text where only a model that knows whether it is inside quotes can
predict the case of the next word, so it has a quote unit."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser

import jax
import numpy as np
import pytest

from charrnn import checkpoint, data, explore, features, html, inspection, model, scoring
from charrnn.checkpoint import CheckpointError
from charrnn.config import ConfigError, ModelConfig
from charrnn.data import CorpusError
from conftest import shouting_in_quotes

HOSTILE = '</script><script>document.title="pwned"</script><!-- <img src=x onerror="document.title=1"> & \u2028'


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 1x16 LSTM trained for 150 steps (about 8 s) on quoted text: its run directory and checkpoint."""
    from charrnn import train
    from charrnn.config import TrainConfig

    root = tmp_path_factory.mktemp("explore-run")
    (root / "quotes.txt").write_text(shouting_in_quotes(30_000), encoding="utf-8")
    corpus = data.load_corpus(root / "quotes.txt")
    config = ModelConfig(vocab_size=len(corpus.vocab), cell="lstm", hidden_size=16, num_layers=1, embedding_size=8)
    train.train(corpus, config, TrainConfig(batch_size=16, seq_length=50, learning_rate=2e-2, warmup_steps=20,
                                            max_steps=150, max_epochs=None, eval_every=150), root / "run")
    ckpt = checkpoint.load(root / "run")
    return root, ckpt, checkpoint.load_params(ckpt)


MAX_CHARS = 1200  # of a validation split of 1,500
REGEX = "vowel=[AEIOU]+"


@pytest.fixture(scope="module")
def explored(run):
    root, _, _ = run
    return explore.explore(root / "run", out=root / "page.html", max_chars=MAX_CHARS, feature_specs=[REGEX])


@pytest.fixture(scope="module")
def text(run):
    root, ckpt, _ = run
    return (root / "quotes.txt").read_text(encoding="utf-8")[slice(*ckpt.splits.val)][:MAX_CHARS]


@pytest.fixture(scope="module")
def recording(run, text):
    """The model's states, recorded independently of the page."""
    _, ckpt, params = run
    return inspection.record(params, ckpt.model, ckpt.vocab.encode(text))


# --- the page builder -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_command_writes_the_validation_split_and_says_the_size(explored, run):
    root, _, _ = run
    assert explored.path == root / "page.html" and explored.bytes == explored.path.stat().st_size
    assert explored.chars == MAX_CHARS and explored.source["source"].startswith("the validation split of ")
    assert explored.source["truncated_from"] > MAX_CHARS
    assert not list(root.glob(".page.html.*"))  # written through a temporary file, renamed


def test_script_json_escapes_everything_that_could_end_the_element():
    value = {"text": HOSTILE, "n": 1}
    encoded = explore.script_json(value)
    assert not re.search("[<>&\u2028\u2029]", encoded)
    assert json.loads(encoded) == value


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.scripts, self._in = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in = dict(attrs)
            self.scripts.append((self._in, ""))

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, d):
        if self._in is not None:
            self.scripts[-1] = (self._in, self.scripts[-1][1] + d)


def test_corpus_text_is_escaped_in_the_page():
    text = (HOSTILE + " a < b > c & d\n") * 4
    vocab = data.Vocabulary.from_text(text)
    config = ModelConfig(vocab_size=len(vocab), cell="gru", hidden_size=4, num_layers=1, embedding_size=3)
    page = explore.explore_page(model.init(jax.random.key(0), config), config, vocab, text,
                                source={"path": "<i>p</i>", "source": "<i>p</i>"}, title="<b>t</b>")
    parsed = Tags()
    parsed.feed(page)
    assert [tag for tag, _ in parsed.tags if tag in ("script", "img", "i", "b")] == ["script", "script"]
    (data_attrs, payload), (code_attrs, _) = parsed.scripts
    assert data_attrs == {"type": "application/json", "id": "charrnn-data"} and code_attrs == {}
    assert json.loads(payload)["text"] == text and json.loads(payload)["source"]["path"] == "<i>p</i>"
    assert "<title>&lt;b&gt;t&lt;/b&gt;</title>" in page
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "default-src 'none'" in csp and "connect-src 'none'" in csp and "unsafe-inline" not in csp


def test_quantisation_error_is_at_most_half_a_step():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(500, 3)) * [1, 10, 1e-3], np.full((500, 1), 0.7),
                        np.tanh(rng.normal(size=(500, 1)) * 5)], axis=1).astype(np.float32)
    q = explore.quantise(x)
    assert q.codes.shape == (5, 500) and q.codes.dtype == np.uint8
    assert (q.codes[:3].min(axis=1) == 0).all() and (q.codes[:3].max(axis=1) == 255).all()
    error = np.abs(q.values() - x)
    assert (error <= q.scale / 2 + 1e-9).all()
    assert q.scale[3] == 0 and np.allclose(q.values()[:, 3], 0.7)


@pytest.mark.slow
def test_top_next_characters_are_the_softmax_of_the_head(run, recording):
    _, ckpt, params = run
    h = recording.states[(0, "h")]
    ids, probs = explore.top_next(params, h)
    logits = np.asarray(h, np.float64) @ np.asarray(params["head"]["W"], np.float64) + np.asarray(params["head"]["b"])
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    want = np.argsort(-p, axis=1, kind="stable")[:, :5]
    rows = np.arange(len(h))[:, None]
    np.testing.assert_allclose(probs, p[rows, want], atol=1e-5)
    np.testing.assert_array_equal(p[rows, ids], p[rows, want])  # same ranking (ties may swap ids)


def one_line(e):
    assert "\n" not in str(e.value) and str(e.value)
    return str(e.value)


@pytest.mark.slow
def test_bad_input_is_refused_with_one_line_and_no_page(run, tmp_path):
    root, ckpt, params = run
    out = tmp_path / "page.html"
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "unknown.txt").write_text("☃☃☃☃")
    (tmp_path / "not-a-checkpoint.safetensors").write_bytes(b"hello, world, this is text")
    with pytest.raises(CorpusError) as e:
        explore.explore(root / "run", tmp_path / "empty.txt", out)
    assert "empty" in one_line(e)
    with pytest.raises(CorpusError) as e:
        explore.explore(root / "run", tmp_path / "unknown.txt", out)
    assert "vocabulary" in one_line(e)
    with pytest.raises(ConfigError) as e:
        explore.explore(root / "run", out=out, feature_specs=["bad=("])
    assert "bad" in one_line(e)
    with pytest.raises(CheckpointError) as e:
        explore.explore(tmp_path / "not-a-checkpoint.safetensors", out=out)
    one_line(e)
    with pytest.raises(ConfigError):
        explore.explore(root / "run", out=out, max_chars=0)
    with pytest.raises(CorpusError):
        explore.explore_page(params, ckpt.model, ckpt.vocab, "")
    with pytest.raises(ConfigError):
        explore.explore_page(params, ckpt.model, ckpt.vocab, "the cat sat", regexes={"x": "[a-"})
    assert {p.name for p in tmp_path.iterdir()} == {"empty.txt", "unknown.txt", "not-a-checkpoint.safetensors"}


# --- in a real browser ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(explored):
    """A headless Chromium (through chromedriver) with the page open; skipped where either is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    binary = next((shutil.which(b) for b in ("chromium", "chromium-browser") if shutil.which(b)), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("no Chromium or chromedriver on this machine (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.get(explored.path.as_uri())
    try:
        assert driver.execute_script("return document.body.dataset.ready") == "1"
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser):
    """The open page; after each test, no console message at warning level or above."""
    yield browser
    problems = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert not problems


def js(driver, script, *args):
    return driver.execute_script(script, *args)


def rgb(css):
    return tuple(int(v) for v in re.findall(r"\d+", css)[:3])


def unit_index(ckpt, unit):
    """The page's unit index: groups (layer, state) in recording order, H units each."""
    states = inspection.INSPECTED_STATES[ckpt.model.cell]
    return (unit.layer * len(states) + states.index(unit.state)) * ckpt.model.hidden_size + unit.unit


@pytest.mark.slow
def test_clicking_a_unit_colours_each_character_by_its_recorded_value(page, run, recording):
    _, ckpt, _ = run
    unit = scoring.Unit(0, "f", 5)
    row = page.find_element("css selector", f'#unit-list .row[data-unit="{unit_index(ckpt, unit)}"]')
    page.execute_script("arguments[0].scrollIntoView()", row)
    row.click()
    assert page.find_element("id", "unit-name").text == "L0 f[5]"
    got = np.array([rgb(c) for c in js(page, "return Array.from(document.querySelectorAll('#text span'), "
                                              "s => getComputedStyle(s).backgroundColor)")])
    values = recording.activation(unit).astype(np.float64)
    shown = html.standardized(values, values.mean(), values.std())
    want = np.array([[int(html.activation_colour(v)[i : i + 2], 16) for i in (1, 3, 5)] for v in shown])
    # The page colours the quantised value: off by at most half a step, which moves a channel by at most
    # 255 * (step / 2) / (2 sd), plus one for rounding.
    step = (values.max() - values.min()) / 255
    assert np.abs(got - want).max() <= 255 * step / 2 / (2 * values.std()) + 1
    assert len(set(map(tuple, got))) > 20  # the colours actually vary


@pytest.mark.slow
def test_arrow_keys_move_between_units_in_the_listed_order(page):
    from selenium.webdriver.common.keys import Keys

    listed = js(page, "return Array.from(document.querySelectorAll('#unit-list .row'), r => r.firstChild.textContent)")
    start = page.find_element("id", "unit-name").text
    body = page.find_element("tag name", "body")
    body.send_keys(Keys.ARROW_DOWN)
    assert page.find_element("id", "unit-name").text == listed[listed.index(start) + 1]
    body.send_keys(Keys.ARROW_UP, Keys.ARROW_UP)
    assert page.find_element("id", "unit-name").text == listed[listed.index(start) - 1]


@pytest.mark.slow
def test_selecting_a_quoted_span_lists_the_quote_unit_and_matches_other_quotes(page, run, text):
    from selenium.webdriver.common.action_chains import ActionChains

    _, ckpt, params = run
    report = inspection.inspect(params, ckpt.model, ckpt.vocab, text, features.builtin_features(text), ablation_chars=0)
    quote_unit = next(s.unit for s in report.findings["in_double_quotes"] if s.unit.state == "h")
    # The characters inside a quoted phrase of at least 12 characters, past the start (the opening quote is
    # already inside, the closing one outside).
    inside = features.builtin_features(text)[0].values
    starts = np.flatnonzero(np.diff(inside.astype(int)) == 1) + 1
    ends = np.flatnonzero(np.diff(inside.astype(int)) == -1)
    a, b = next((s + 1, e) for s, e in zip(starts, ends[ends > starts[0]]) if s > 100 and e - s > 12)
    assert text[a - 1] == '"' and text[b + 1] == '"' and '"' not in text[a : b + 1]
    spans = page.find_elements("css selector", "#text span")
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", spans[a])
    first, last = spans[a], spans[b]
    ActionChains(page).move_to_element_with_offset(first, -first.size["width"] // 2 + 1, 0).click_and_hold() \
        .move_to_element_with_offset(last, last.size["width"] // 2 - 1, 0).release().perform()
    threshold = page.find_element("id", "threshold")
    threshold.clear()
    threshold.send_keys("0.1")
    page.find_element("id", "select-go").click()
    assert page.find_element("id", "select-message").text == ""
    assert f"characters {a}–{b}" in page.find_element("id", "select-units").text
    top = [int(u) for u in js(page, "return Array.from(document.querySelectorAll('#select-units .item'), i => i.dataset.unit)")]
    assert unit_index(ckpt, quote_unit) in top[:5]
    matches = js(page, "return Array.from(document.querySelectorAll('#matches .item'), i => [+i.dataset.start, +i.dataset.end])")
    assert len(matches) >= 5
    assert np.mean([inside[s : e + 1].mean() for s, e in matches[:5]]) > 0.8  # other quotes
    page.find_elements("css selector", "#matches .item")[0].click()
    s, e = matches[0]
    assert js(page, "return document.querySelectorAll('#text span.match').length") == e - s + 1


@pytest.mark.slow
def test_a_regex_feature_is_scored_in_the_page_as_inspect_cells_scores_it(page, run, text, recording):
    _, ckpt, params = run
    name, pattern = REGEX.split("=", 1)
    page.find_element("id", "regex-name").clear()
    page.find_element("id", "regex-name").send_keys(name)
    box = page.find_element("id", "regex")
    box.clear()
    box.send_keys(pattern)
    page.find_element("id", "regex-go").click()
    assert page.find_element("id", "regex-message").text == ""
    listed = js(page, "return Array.from(document.querySelectorAll('#regex-units .item'), i => [+i.dataset.unit, +i.dataset.auroc])")
    got = dict(listed)
    # inspect-cells --feature vowel=[AEIOU]+ on the same text: the Python numbers.
    feature = features.regex_feature(name, pattern, text)
    report = inspection.inspect(params, ckpt.model, ckpt.vocab, text, [feature], top=3, ablation_chars=0)
    for finding in report.findings[name]:
        assert got[unit_index(ckpt, finding.unit)] == pytest.approx(finding.auroc, abs=0.01)
    assert listed[0][0] == unit_index(ckpt, report.findings[name][0].unit)
    # And exactly the AUROC of the stored (quantised) values.
    states = [recording.states[(0, s)] for s in inspection.INSPECTED_STATES["lstm"]]
    codes = explore.quantise(np.concatenate(states, axis=1)).codes.T.astype(np.float64)
    exact = scoring.auroc(scoring.rank_columns(codes), feature.values)
    for u, value in listed:
        assert value == pytest.approx(exact[u], abs=1e-12)
    assert js(page, "return document.getElementById('sort').value") == f"regex: {name}"


@pytest.mark.slow
def test_a_bad_regex_shows_a_message_in_the_page(page):
    box = page.find_element("id", "regex")
    box.clear()
    box.send_keys("([A-")
    page.find_element("id", "regex-go").click()
    assert "does not compile" in page.find_element("id", "regex-message").text


@pytest.mark.slow
def test_hovering_a_character_shows_the_models_guesses(page, run, recording, text):
    from selenium.webdriver.common.action_chains import ActionChains

    _, ckpt, params = run
    t = 200
    span = page.find_elements("css selector", "#text span")[t]
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", span)
    ActionChains(page).move_to_element(span).perform()
    hover = page.find_element("id", "hover").text
    ids, probs = explore.top_next(params, recording.states[(0, "h")][t : t + 1])
    for i, p in zip(ids[0], probs[0]):
        assert f"{p:.3f}" in hover
    assert f"{recording.nll[t - 1]:.3f} nats" in hover and f"{recording.nll[t]:.3f} nats" in hover


@pytest.mark.slow
def test_no_network_request_and_the_policy_blocks_one(browser, explored):
    browser.get(explored.path.as_uri())
    assert js(browser, "return document.body.dataset.ready") == "1"
    assert js(browser, "return performance.getEntriesByType('resource').length") == 0
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []
    blocked = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        document.addEventListener('securitypolicyviolation', e => done(e.violatedDirective));
        fetch('http://127.0.0.1:9/x').catch(() => {});""")
    assert blocked == "connect-src"
    browser.get_log("browser")  # the refusal itself is logged; nothing else was
