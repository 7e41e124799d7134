"""Look at the MLflow UI as a user would: headless Chromium, driven by Playwright, opens a page (signed in with
basic-auth credentials on a team server), waits until the page shows the expected text, and keeps a screenshot.

Playwright drives Debian's Chromium (`apt-get install chromium-headless-shell`, or `chromium`) through
`executable_path`: nothing is downloaded (`playwright install` is not needed). $ARGML_CHROMIUM names another
Chromium binary.

    argml ui URL --out shot.png [--expect TEXT ...] [--user NAME]   # password: $ARGML_UI_PASSWORD
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from argml.core.errors import Unavailable, command

ENV_BROWSER = "ARGML_CHROMIUM"
# The binaries themselves: Debian's /usr/bin/chromium* are shell scripts that do not `exec`, and a browser
# started through one would outlive Playwright's close().
BROWSERS = ("/usr/lib/chromium/chromium-headless-shell", "/usr/lib/chromium/chromium",
            "chromium-headless-shell", "chromium", "chromium-browser")


def find_browser() -> str:
    if os.environ.get(ENV_BROWSER):
        return os.environ[ENV_BROWSER]
    for name in BROWSERS:
        if (Path(name).is_file() and os.access(name, os.X_OK)) or (not name.startswith("/") and shutil.which(name)):
            return name if name.startswith("/") else shutil.which(name)
    raise FileNotFoundError(f"no headless Chromium (looked for {', '.join(BROWSERS)}); on Debian: "
                            f"apt-get install chromium-headless-shell, or set {ENV_BROWSER}")


def open_page(url: str, out: Path | None = None, expect: tuple[str, ...] = (), username: str | None = None,
              password: str | None = None, size: tuple[int, int] = (1400, 900), timeout: float = 60) -> str:
    """Open `url`, wait until its text holds every string of `expect` (then one more second for rendering),
    save a PNG screenshot to `out`, and return the page's visible text. TimeoutError names what never showed
    (the screenshot is saved then too)."""
    from playwright.sync_api import sync_playwright

    credentials = {"username": username, "password": password or ""} if username is not None else None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=find_browser(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_context(http_credentials=credentials,
                                       viewport={"width": size[0], "height": size[1]}).new_page()
            page.goto(url, timeout=timeout * 1000)
            try:
                _wait_for_text(page, expect, timeout)
                page.wait_for_timeout(1000)  # let charts finish drawing
                return page.inner_text("body")
            finally:  # a page that never showed what was expected is kept too: it shows what went wrong
                if out is not None:
                    Path(out).parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(out))
        finally:
            browser.close()


def _wait_for_text(page, expect: tuple[str, ...], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = page.evaluate("document.body ? document.body.innerText : ''")
        missing = [item for item in expect if item not in text]
        if not missing:
            return text
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page never showed {missing}; it shows:\n{text[:2000]}")
        page.wait_for_timeout(500)


def mlflow_pages(base_url: str, experiment_id: str, run_ids: list[str] = ()) -> dict[str, str]:
    """The two pages an argml user opens: the experiment's training runs and the runs' comparison.

    MLflow 3.17's UI takes an experiment's kind from its global "GenAI | Model training" switch (kept in the
    browser, GenAI at first), not from the experiment's `mlflow.experimentKind` tag (mlflow/mlflow#20161):
    a plain experiment link opens the GenAI overview in a fresh browser. `workflowType=machine_learning`
    opens the runs table whatever the switch says."""
    runs = ",".join(f'"{run_id}"' for run_id in run_ids)
    return {"runs": f"{base_url}/#/experiments/{experiment_id}?workflowType=machine_learning",
            "compare": f'{base_url}/#/compare-runs?runs=[{runs}]&experiments=["{experiment_id}"]'}


def runs_link(tracking_uri: str, experiment_id: str) -> str:
    """Where to look at an experiment's runs: on a tracking server, the server; on a local store, the
    default address of `mlflow ui`."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return mlflow_pages(base, experiment_id)["runs"]


def check_answers(url: str, timeout: float = 10) -> None:
    """Unavailable when nothing answers at `url` (Chromium would show its own error page, not fail); any HTTP
    answer, a 401 too, means the server is up."""
    try:
        urllib.request.urlopen(url, timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except OSError as error:
        raise Unavailable(f"{url} does not answer ({getattr(error, 'reason', error)}): is the MLflow UI or server "
                          "running?") from None


@command("ui")
def main(argv: list[str] | None = None, prog: str = "argml ui") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--out", type=Path, help="PNG screenshot")
    parser.add_argument("--expect", action="append", default=[], help="text the page must show (repeatable)")
    parser.add_argument("--user", help="basic-auth user; the password comes from $ARGML_UI_PASSWORD")
    parser.add_argument("--size", default="1400x900", help="window WIDTHxHEIGHT")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    width, height = map(int, args.size.lower().split("x"))
    check_answers(args.url)
    text = open_page(args.url, args.out, tuple(args.expect), args.user, os.environ.get("ARGML_UI_PASSWORD"),
                     (width, height), args.timeout)
    print(text)
    return 0


if __name__ == "__main__":
    main()
