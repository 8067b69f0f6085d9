#!/usr/bin/env python3
"""Open a page of `charrnn explore` in headless Chromium (as the tests drive it), time it, and look at it.

    python benchmarks/explore_page.py PAGE.html [--unit N] [--select A B --state c --threshold 0.1] [--screenshot out.png]

Prints one JSON line: the page's size, the milliseconds from navigation start until the page is ready (its
script has drawn the text and the unit list: `window.charrnnReadyMs`), median of `--loads` fresh loads;
with --select, what Select lists for the characters A..B (the units, ranked) and what Match finds (the other
stretches of text, with their text); with --screenshot, a PNG of the page with unit N chosen. Needs Debian's
chromium and chromium-driver, and selenium (the test extra).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path


def driver_for(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def ready_ms(driver) -> float:
    return driver.execute_script("return window.charrnnReadyMs;")  # the page's performance.now() when ready


def select(driver, a: int, b: int, threshold: float, state: str, set_size: int, off_before: bool) -> dict:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    spans = driver.find_elements("css selector", "#text span")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", spans[a])
    first, last = spans[a], spans[b]
    ActionChains(driver).move_to_element_with_offset(first, -first.size["width"] // 2 + 1, 0).click_and_hold() \
        .move_to_element_with_offset(last, last.size["width"] // 2 - 1, 0).release().perform()
    Select(driver.find_element("id", "select-state")).select_by_value(state)
    box = driver.find_element("id", "off-before")
    if box.is_selected() != off_before:
        box.click()
    for box_id, value in (("threshold", threshold), ("set-size", set_size)):
        box = driver.find_element("id", box_id)
        box.clear()
        box.send_keys(str(value))
    driver.find_element("id", "select-go").click()
    units = driver.execute_script("return Array.from(document.querySelectorAll('#select-units .item'), "
                                  "i => i.textContent.trim())")
    matches = driver.execute_script("return Array.from(document.querySelectorAll('#matches .item'), "
                                    "i => [+i.dataset.start, +i.dataset.end, i.textContent.trim()])")
    stats = driver.execute_script("const s = document.querySelector('#select-units .stats');"
                                  "return s ? s.textContent : '';")
    return {"span": [a, b], "state": state, "threshold": threshold, "set_size": set_size, "off_before": off_before, "message": driver.find_element("id", "select-message").text,
            "found": stats,
            "units": units[:10], "matches": matches[:10], "num_matches": len(matches)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("page", type=Path)
    p.add_argument("--loads", type=int, default=3)
    p.add_argument("--unit", type=int, default=None, help="the page's unit index to choose")
    p.add_argument("--select", type=int, nargs=2, default=None, metavar=("A", "B"))
    p.add_argument("--threshold", type=float, default=0.1)
    p.add_argument("--set-size", type=int, default=10, help="how many of the selected units Match looks for")
    p.add_argument("--off-before", action="store_true", help="only units that were off just before the span")
    p.add_argument("--state", default="h", help="the state Select looks at (h, c, a gate; '' for all)")
    p.add_argument("--screenshot", type=Path, default=None)
    p.add_argument("--size", default="1400x900")
    args = p.parse_args()
    width, height = map(int, args.size.split("x"))
    out = {"page": str(args.page), "bytes": args.page.stat().st_size}
    driver = driver_for(width, height)
    try:
        times = []
        for _ in range(args.loads):
            driver.get("about:blank")
            driver.get(args.page.resolve().as_uri())
            times.append(ready_ms(driver))
        out["ready_ms"] = round(statistics.median(times), 1)
        out["ready_ms_each"] = [round(t, 1) for t in times]
        if args.unit is not None:
            row = driver.find_element("css selector", f'#unit-list .row[data-unit="{args.unit}"]')
            driver.execute_script("arguments[0].scrollIntoView()", row)
            row.click()
            out["unit"] = driver.find_element("id", "unit-name").text
        if args.select is not None:
            out["select"] = select(driver, *args.select, args.threshold, args.state, args.set_size, args.off_before)
        if args.screenshot is not None:
            driver.execute_script("window.scrollTo(0, 0)")
            driver.save_screenshot(str(args.screenshot))
            out["screenshot"] = str(args.screenshot)
    finally:
        driver.quit()
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
