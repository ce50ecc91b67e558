"""The web page in a real browser: Debian's chromium, driven by chromedriver through Selenium,
against a real uvicorn server. Skips with the reason (and the install command) where chromium or
chromedriver is missing or does not start."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from predict_fixtures import kaggle_run, noisy_line_run  # noqa: F401
from test_serve import IAM_LINES

from text_recognizer.predictors import LinePredictor
from text_recognizer.serving.app import create_app
from text_recognizer.serving.reader import load_reader
from text_recognizer.serving.server import ServerThread

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install chromium chromium-driver"
WAIT_S = 60


@pytest.fixture(scope="module")
def browser() -> Any:
    """A headless chromium, or a skip that says what is missing and how to install it."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if shutil.which(path) is None:
            pytest.skip(f"{path} is missing (Debian's {package}): {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1000,1000")
    try:
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    except Exception as e:  # a driver/browser version mismatch, no display libraries, ...
        pytest.skip(f"chromium did not start through {CHROMEDRIVER}: {str(e).splitlines()[0]}")
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser: Any, noisy_line_run: Path) -> Any:  # noqa: F811
    """The page of a real server (in a thread) reading the noisy line model, loaded in chromium."""
    torch.set_num_threads(1)
    reader = load_reader(noisy_line_run)
    with ServerThread(create_app(reader)) as url:
        browser.get(url + "/")
        wait_for(browser, lambda: "line model" in text(browser, "model"))
        yield browser, url, reader


def text(browser: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, element_id).get_attribute("textContent")


def wait_for(browser: Any, condition: Any) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT_S).until(lambda _: condition())


def read_answer(browser: Any, act: Any) -> dict[str, str]:
    """Do ``act`` (an upload, a click) and wait for the page to show the answer."""
    browser.execute_script("document.getElementById('status').textContent = ''")
    act()
    wait_for(browser, lambda: text(browser, "status") == "done")
    return {key: text(browser, key) for key in ("pred", "conf", "ms", "error")}


def test_upload_a_handwritten_line_shows_its_text(page: Any, noisy_line_run: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    browser, _, _ = page
    path = IAM_LINES / "He rose from his breakfast-nook bench.png"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    expected = LinePredictor.from_run(noisy_line_run).predict(path)
    shown = read_answer(browser, lambda: browser.find_element(By.ID, "file").send_keys(str(path)))
    assert shown["error"] == "" and shown["pred"] == expected.text and expected.text
    assert float(shown["conf"]) == pytest.approx(expected.confidence, abs=1e-4)
    assert shown["ms"].endswith(" ms") and float(shown["ms"].split()[0]) >= 0


def test_draw_on_the_canvas_and_read(page: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Strokes drawn with the mouse in the right half of the canvas reach the model: the page
    sizes its canvas by the model's input and, for this "crop" model (which keeps the top-left
    64 x 256 of an image as it is), scales the drawing to that, so the model sees the strokes
    (sent as drawn, they were cropped away and the model read a blank image). The page shows what
    the API reads for that very drawing."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser, url, reader = page
    assert reader.predictor.preprocessing["resize"] == "crop"
    seen: list[np.ndarray] = []
    prepare = reader.prepare
    monkeypatch.setattr(reader, "prepare", lambda image: seen.append(prepare(image)) or seen[-1])
    size = browser.execute_script(
        "const c = document.getElementById('canvas'); return [c.width, c.height];"
    )
    assert size == [600, 150]  # 256 x 64's aspect
    canvas = browser.find_element(By.ID, "canvas")
    strokes = ActionChains(browser).move_to_element_with_offset(canvas, 50, 10).click_and_hold()
    for dx, dy in [(30, 40), (30, -40), (30, 40), (40, 0), (0, -40), (60, 20), (40, 20)]:
        strokes.move_by_offset(dx, dy)
    strokes.release().perform()
    dark = browser.execute_script(
        "const c = document.getElementById('canvas');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 128) n++; return n;"
    )
    assert dark > 200  # the pen drew black strokes on the white canvas
    shown = read_answer(browser, lambda: browser.find_element(By.ID, "read").click())
    assert shown["error"] == "" and shown["pred"]
    (model_input,) = seen
    ink_columns = np.flatnonzero((model_input > 127).any(axis=0))
    assert len(ink_columns) > 40 and ink_columns.min() > 100  # the strokes, where they were drawn
    sent = Image.fromarray(255 - model_input)  # what the model saw, as an upload again
    buffer = io.BytesIO()
    sent.save(buffer, "PNG")
    direct = httpx.post(f"{url}/v1/predict", files={"image": ("d.png", buffer.getvalue())})
    assert shown["pred"] == direct.json()["pred"]


def test_a_file_that_is_not_an_image_shows_the_error(page: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser, _, _ = page
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    shown = read_answer(browser, lambda: browser.find_element(By.ID, "file").send_keys(str(notes)))
    assert "not a known image format" in shown["error"] and shown["pred"] == ""
