"""The HTML report rendered in headless Chromium (Debian ``chromium``): its tables and plots are really there.

The report marks each <img> with its decoded width once the page has loaded (``data-rendered-width``); a broken
image reads 0, which the negative control below checks.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_build import make_run_dir  # the result-dir fixtures (tests/report/test_build.py)

from safealign.report.build import build_report

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium "
                                "(apt-get install -y chromium)")


class DomSummary(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[str] = []
        self.imgs: list[dict[str, str]] = []
        self.rows = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append(a.get("id") or "")
        elif tag == "img":
            self.imgs.append({k: v or "" for k, v in a.items()})
        elif tag == "tr":
            self.rows += 1


def dump_dom(html_path: Path, profile: Path) -> DomSummary:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--dump-dom", html_path.resolve().as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "</html>" in out.stdout, out.stderr[-2000:]
    dom = DomSummary()
    dom.feed(out.stdout)
    return dom


def test_report_renders_tables_and_images(tmp_path):
    run = make_run_dir(tmp_path)
    paths = build_report(run, examples=2)
    dom = dump_dom(paths["html"], tmp_path / "profile")
    for table in ("safe-table", "refusal-table", "helpful-table", "rm-table", "raft-table", "compare-table",
                  "analyze-table", "raft-analysis-table", "judges-table", "stages-table", "helpful-effect-table"):
        assert table in dom.tables
    assert sum(t.startswith("example-") for t in dom.tables) == 2
    assert dom.rows > 40
    assert sorted(i["data-file"] for i in dom.imgs) == ["plots/raft_iterations.png", "plots/safety_vs_samples.png",
                                                        "plots/tradeoff.png"]
    for img in dom.imgs:
        assert int(img["data-rendered-width"]) > 300, img["data-file"]  # decoded by the browser
        assert (run / img["data-file"]).is_file()  # and the same plot is a file in the run dir

    # negative control: a corrupt image is seen as not rendered
    broken = paths["html"].with_name("broken.html")
    text = paths["html"].read_text()
    broken.write_text(re.sub(r"base64,[A-Za-z0-9+/]{40}", "base64,AAAA", text, count=1))
    dom = dump_dom(broken, tmp_path / "profile2")
    assert sorted(int(i["data-rendered-width"]) for i in dom.imgs)[0] == 0
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
