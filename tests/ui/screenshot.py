"""The README's picture of the try-it page: ``make screenshot`` writes docs/try-it.png.

It trains the model `make run` trains into a temporary store, serves it with a real
predictor, and photographs the page in Debian's chromium after choosing a preset and
predicting a small batch with one row the server refuses. The picture is reduced to
64 colours (Pillow, which KServe already needs): a third of the bytes, same look.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

from tests.api.conftest import PredictorProcess
from tests.ui.conftest import CHROMIUM, SETTLED, WAIT_MS
from training.settings import TrainingSettings
from training.store import open_store
from training.train import train

BATCH = """sepal_length,sepal_width,petal_length,petal_width
5.1,3.5,1.4,0.2
6.5,2.8,4.6,1.5
7.6,3.0,6.6,2.2
5.9,3.0,5.1,1.8
6.1,2.8,150,1.3
"""


def photograph(output: Path) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        trained = train(TrainingSettings())
        open_store(str(root / "models")).publish(trained.estimator, trained.card, 5)
        server = PredictorProcess(
            root / "predictor.log", "--model_uri", str(root / "models")
        )
        try:
            server.wait_until("/v1/models/iris", 200)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"http://127.0.0.1:{server.port}/ui/")
                page.get_by_role("button", name="versicolor").click()
                page.locator(SETTLED).wait_for(timeout=WAIT_MS)
                page.get_by_label("CSV rows").fill(BATCH)
                page.get_by_role("button", name="Predict the rows").click()
                page.locator("#batch-table tbody tr").nth(4).wait_for(timeout=WAIT_MS)
                page.screenshot(path=output, full_page=True)
                browser.close()
        finally:
            server.stop()
    with Image.open(output) as taken:
        reduced = taken.convert("RGB").quantize(64, dither=Image.Dither.NONE)
    reduced.save(output, optimize=True)


if __name__ == "__main__":
    photograph(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/try-it.png"))
