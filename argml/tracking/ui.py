"""Look at the MLflow UI as a user would: headless Chromium opens a page (with basic-auth credentials for a
team server), waits until the page shows the expected text, and keeps a screenshot.

Chromium refuses credentials in a URL and headless Chromium cannot answer a login prompt, so the page is
driven over the DevTools protocol (aiohttp's websocket client, already installed with DVC): every request of
the page carries an `Authorization` header.

    argml ui URL --out shot.png [--expect TEXT ...] [--user NAME]   # password: $ARGML_UI_PASSWORD
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from argml.core.errors import Unavailable, command

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser")


def find_browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    raise FileNotFoundError(f"no headless Chromium on PATH (looked for {', '.join(BROWSERS)}); on Debian: "
                            "apt-get install chromium-headless-shell")


def open_page(url: str, out: Path | None = None, expect: tuple[str, ...] = (), username: str | None = None,
              password: str | None = None, size: tuple[int, int] = (1400, 900), timeout: float = 60) -> str:
    """Open `url`, wait until its text holds every string of `expect` (then one more second for rendering),
    save a PNG screenshot to `out`, and return the page's visible text. TimeoutError names what never showed
    (the screenshot is saved then too)."""
    with tempfile.TemporaryDirectory(prefix="argml-chromium-") as profile:
        browser = subprocess.Popen(
            [find_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             f"--window-size={size[0]},{size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port = _devtools_port(Path(profile), browser, timeout)
            headers = {}
            if username is not None:
                token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
                headers["Authorization"] = f"Basic {token}"
            return asyncio.run(_drive(port, url, out, expect, headers, size, timeout))
        finally:
            _stop(browser)


def _stop(browser: subprocess.Popen, grace: float = 10) -> None:
    """Stop the browser and every process it started (Debian's launcher is a shell script that runs the
    real binary, which forks a zygote and renderers): they share the session's process group."""
    def group_alive() -> bool:
        try:
            os.killpg(browser.pid, 0)
            return True
        except ProcessLookupError:
            return False

    if group_alive():
        os.killpg(browser.pid, signal.SIGTERM)
    try:
        browser.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + grace
    while group_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_alive():
        os.killpg(browser.pid, signal.SIGKILL)
    browser.wait()


def _devtools_port(profile: Path, browser: subprocess.Popen, timeout: float) -> int:
    """Chromium writes the port it chose (--remote-debugging-port=0) to DevToolsActivePort in its profile."""
    deadline = time.monotonic() + timeout
    marker = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if browser.poll() is not None:
            raise Unavailable(f"Chromium exited with code {browser.returncode} before it opened DevTools")
        if marker.exists() and (lines := marker.read_text().splitlines()):
            return int(lines[0])
        time.sleep(0.1)
    raise TimeoutError("Chromium did not open its DevTools port")


async def _drive(port: int, url: str, out: Path | None, expect: tuple[str, ...], headers: dict,
                 size: tuple[int, int], timeout: float) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
            pages = [target for target in await response.json() if target["type"] == "page"]
        async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as socket:
            ids = itertools.count(1)

            async def call(method: str, **params):
                number = next(ids)
                await socket.send_json({"id": number, "method": method, "params": params})
                async for message in socket:
                    reply = json.loads(message.data)
                    if reply.get("id") == number:
                        if "error" in reply:
                            raise Unavailable(f"DevTools {method}: {reply['error']}")
                        return reply.get("result", {})
                raise Unavailable("Chromium closed the DevTools connection")

            await call("Network.enable")
            if headers:
                await call("Network.setExtraHTTPHeaders", headers=headers)
            await call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1,
                       mobile=False)
            await call("Page.navigate", url=url)
            try:
                await _wait_for_text(call, expect, timeout)
                await asyncio.sleep(1)  # let charts finish drawing
                return await _page_text(call)
            finally:  # a page that never showed what was expected is kept too: it shows what went wrong
                if out is not None:
                    shot = await call("Page.captureScreenshot", format="png")
                    Path(out).parent.mkdir(parents=True, exist_ok=True)
                    Path(out).write_bytes(base64.b64decode(shot["data"]))


async def _page_text(call) -> str:
    result = await call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''",
                        returnByValue=True)
    return result["result"].get("value", "")


async def _wait_for_text(call, expect: tuple[str, ...], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = await _page_text(call)
        missing = [item for item in expect if item not in text]
        if not missing:
            return text
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page never showed {missing}; it shows:\n{text[:2000]}")
        await asyncio.sleep(0.5)


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
