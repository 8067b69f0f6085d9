"""The malloc settings of `charrnn.memory`, and `charrnn.launch`: which commands re-run themselves, with what
environment (huge pages; for train, one CPU device per core), and that they do."""

import os
import subprocess
import sys

import pytest

from charrnn import cli, launch, memory


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
    code = (f"from charrnn import launch, memory; import os, sys; "
            f"launch.reexec([sys.executable, '-c', {show!r}], memory.huge_pages_environment(os.environ)); "
            f"print('not replaced')")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == memory.HUGE_PAGES_TUNABLE


def test_nothing_to_run_again_with_is_no_exec():
    """With no environment to change, `reexec` returns and the program goes on (in a child process: were it
    replaced, it would exit with 3 instead)."""
    code = ("from charrnn import launch; import sys; "
            "launch.reexec([sys.executable, '-c', 'raise SystemExit(3)'], None); print('went on')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "went on", done.stderr


IMPORT_EVERYTHING = """
import ctypes, importlib, os, pkgutil, sys
opened = []
real = ctypes.CDLL
ctypes.CDLL = lambda name, *a, **k: opened.append(name) or real(name, *a, **k)
import jax, optax  # they set variables of their own at import; what charrnn's modules do is measured after
before = dict(os.environ)
import charrnn, charrnn.cli
for module in pkgutil.walk_packages(charrnn.__path__, "charrnn."):
    if module.name != "charrnn.__main__":
        importlib.import_module(module.name)
print(len(sys.modules), opened, dict(os.environ) == before)
"""


def test_importing_any_module_changes_no_process_state():
    """No module sets the allocator (that goes through the C library) or the environment when imported: the
    command applies its settings at start, a Python user with `launch.configure_process`."""
    out = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], capture_output=True, text=True, check=True).stdout
    assert out.split(maxsplit=1)[1].strip() == "[] True"


def test_configure_process_gives_a_python_user_one_cpu_device_per_core():
    code = ("from charrnn import launch; applied = launch.configure_process(); import jax; "
            "print(applied['cpu_devices'], len(jax.devices('cpu')))")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "CHARRNN_ONE_CPU_DEVICE")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    cores = launch.usable_cores()
    assert out.split() == ([str(cores > 1), str(min(cores, launch.MAX_CPU_DEVICES))])


def test_train_asks_for_one_cpu_device_per_core_up_to_eight():
    assert launch.cpu_devices_environment({"A": "1"}, 2) == {"A": "1", "XLA_FLAGS": f"{launch.CPU_DEVICES_FLAG}=2"}
    assert launch.cpu_devices_environment({}, 64)["XLA_FLAGS"] == f"{launch.CPU_DEVICES_FLAG}={launch.MAX_CPU_DEVICES}"
    env = launch.cpu_devices_environment({"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}, 4)
    assert env["XLA_FLAGS"] == f"--xla_cpu_enable_fast_math=false {launch.CPU_DEVICES_FLAG}=4"


@pytest.mark.parametrize("environ,cores", [
    ({}, 1),  # nothing to split
    ({"XLA_FLAGS": f"{launch.CPU_DEVICES_FLAG}=3"}, 4),  # the user's count (or ours, after the re-run) stands
    ({"CHARRNN_ONE_CPU_DEVICE": "1"}, 4),
])
def test_one_device_when_asked_done_or_one_core(environ, cores):
    assert launch.cpu_devices_environment(environ, cores) is None


def test_only_train_gets_the_cpu_devices(capable):
    train = launch.command_environment("train", {}, 2)
    assert train["XLA_FLAGS"] == f"{launch.CPU_DEVICES_FLAG}=2" and train["GLIBC_TUNABLES"] == memory.HUGE_PAGES_TUNABLE
    sample = launch.command_environment("sample", {}, 2)
    assert "XLA_FLAGS" not in sample and sample["GLIBC_TUNABLES"] == memory.HUGE_PAGES_TUNABLE
    assert launch.command_environment("train", {"CHARRNN_DEFAULT_MALLOC": "1"}, 2)["XLA_FLAGS"]
    assert launch.command_environment("sample", {"CHARRNN_DEFAULT_MALLOC": "1"}, 2) is None
    for joining in (["c.txt", "--coordinator", "10.0.0.1:1234"], ["--coordinator=10.0.0.1:1234"]):
        assert "XLA_FLAGS" not in launch.command_environment("train", {}, 2, joining)  # one device per process


@pytest.mark.parametrize("argv,reexec", [
    (["train", "corpus.txt"], True), (["sample", "run"], True), (["inspect-cells", "run"], True),
    (["explore", "run"], True), (["evaluate", "run"], True),
    (["train", "--help"], False), (["info", "run"], False), (["report", "run"], False), (["--version"], False),
    ([], False),
])
def test_only_the_model_running_commands_re_run_themselves(monkeypatch, argv, reexec):
    calls, configured = [], []
    monkeypatch.setattr(launch, "reexec", lambda argv, environ: calls.append((argv, environ)))
    monkeypatch.setattr(launch, "configure_process", lambda **kwargs: configured.append(kwargs))
    monkeypatch.setattr(launch, "command_environment", lambda command, environ, cores, args: {"for": command})
    monkeypatch.setattr(cli, "main", lambda **kwargs: None)
    monkeypatch.setattr(sys, "argv", ["charrnn", *argv])
    cli.run()
    assert calls == ([([sys.executable, "-m", "charrnn", *argv], {"for": argv[0]})] if reexec else [])
    assert configured == ([{"cpu_devices": False}] if reexec else [])
