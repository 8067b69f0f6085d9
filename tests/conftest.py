"""Shared fixtures: a headless Chromium for checking HTML pages in a real browser."""

import shutil
import subprocess

import pytest

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
