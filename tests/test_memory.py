"""The malloc settings of `charrnn.memory`: when the command re-runs itself with huge pages, and that it does."""

import os
import subprocess
import sys

import pytest

from charrnn import cli, memory


@pytest.fixture
def capable(monkeypatch):
    """A glibc and a kernel where asking for huge pages gains something."""
    monkeypatch.setattr(memory, "_glibc_version", lambda: (2, 36))
    monkeypatch.setattr(memory, "_transparent_huge_pages_on_request", lambda: True)
    monkeypatch.setattr(memory.sys, "platform", "linux")


def test_adds_the_tunable_and_keeps_the_users_own(capable):
    assert memory.huge_pages_environment({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    env = memory.huge_pages_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


@pytest.mark.parametrize("environ", [
    {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"},  # the user's choice stands
    {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},  # already re-run: no loop
    {"CHARRNN_DEFAULT_MALLOC": "1"},
])
def test_leaves_the_environment_alone_when_asked_or_done(capable, environ):
    assert memory.huge_pages_environment(environ) is None


def test_nothing_to_gain_on_old_glibc_or_without_madvise_huge_pages(capable, monkeypatch):
    monkeypatch.setattr(memory, "_glibc_version", lambda: (2, 34))
    assert memory.huge_pages_environment({}) is None
    monkeypatch.setattr(memory, "_glibc_version", lambda: ())  # not glibc
    assert memory.huge_pages_environment({}) is None
    monkeypatch.setattr(memory, "_glibc_version", lambda: (2, 36))
    monkeypatch.setattr(memory, "_transparent_huge_pages_on_request", lambda: False)
    assert memory.huge_pages_environment({}) is None


def test_reads_the_kernels_huge_page_setting(tmp_path):
    for setting, expected in [("always [madvise] never\n", True), ("[always] madvise never\n", False),
                              ("always madvise [never]\n", False)]:
        (tmp_path / "enabled").write_text(setting)
        assert memory._transparent_huge_pages_on_request(str(tmp_path / "enabled")) is expected
    assert memory._transparent_huge_pages_on_request(str(tmp_path / "missing")) is False


def test_reexec_runs_the_program_again_with_the_tunable():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "CHARRNN_DEFAULT_MALLOC")}
    if memory.huge_pages_environment(env) is None:
        pytest.skip("this machine gains nothing from huge pages (glibc < 2.35 or THP not 'madvise')")
    show = "import os; print(os.environ.get('GLIBC_TUNABLES'))"
    code = f"from charrnn import memory; import sys; memory.reexec_with_huge_pages([sys.executable, '-c', {show!r}]); print('not replaced')"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == memory.HUGE_PAGES_TUNABLE


@pytest.mark.parametrize("argv,reexec", [
    (["train", "corpus.txt"], True), (["sample", "run"], True), (["inspect-cells", "run"], True),
    (["train", "--help"], False), (["info", "run"], False), (["report", "run"], False), (["--version"], False),
    ([], False),
])
def test_only_the_model_running_commands_re_run_themselves(monkeypatch, argv, reexec):
    calls = []
    monkeypatch.setattr(memory, "reexec_with_huge_pages", calls.append)
    monkeypatch.setattr(cli, "main", lambda **kwargs: None)
    monkeypatch.setattr(sys, "argv", ["charrnn", *argv])
    cli.run()
    assert calls == ([[sys.executable, "-m", "charrnn", *argv]] if reexec else [])
