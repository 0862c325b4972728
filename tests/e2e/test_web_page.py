"""The web page at / in a real headless browser: Debian's chromium driven by Playwright, on a real server.

The browser's microphone is Chromium's fake capture device playing a WAV made from a shared clip (it loops).
"""

from __future__ import annotations

import re
import shutil
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from earshot.audio.decode import decode_audio
from earshot.audio.pcm import ENGINE_RATE_HZ, Audio
from earshot.engines.provider_io import wav_bytes
from tests.conftest import ADMIN_TOKEN, Admin, RunningServer, shared_audio, start_server, stop_server
from tests.e2e.wer import words

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
UPLOAD_CLIP = "pocketsphinx-testdata/librivox/sense_and_sensibility_01_austen_64kb-0890.wav"
UPLOAD_TEXT = "unless to be rather cold hearted and rather selfish is to be ill disposed"
LISTED_CLIP = "pocketsphinx-testdata/goforward.wav"
MIC_CLIP = "jfk/jfk.flac"
MIC_TEXT = "and so my fellow americans ask not what your country can do for you"
# Whisper tiny.en may miss a word or two of a clip; "most words present" is what a reader would notice.
MOST_WORDS = 0.7
TRANSCRIBE_TIMEOUT_MS = 120_000
PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1280, "height": 900}
SRT_BLOCK = re.compile(r"^(\d+)\n(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)\n(.+)$", re.DOTALL)


def share_of_words_present(reference: str, text: str) -> float:
    """How many of the reference's words the text has, as a fraction."""
    present = set(words(text))
    expected = words(reference)
    return sum(word in present for word in expected) / len(expected)


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A real server with keys: anonymous calls are refused, so everything the page does carries the key."""
    server = start_server(tmp_path_factory.mktemp("web"), {"EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN})
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def key(keyed_server: RunningServer) -> str:
    return Admin(keyed_server).create_key(name="web page")[1]


@pytest.fixture
def api(keyed_server: RunningServer, key: str) -> Iterator[httpx.Client]:
    """The HTTP API as the page's key sees it."""
    with httpx.Client(
        base_url=keyed_server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    ) as client:
        yield client


def fake_microphone_wav(directory: Path) -> Path:
    """A 16-bit WAV of a clip with silence around it, so that each loop of it ends a turn."""
    audio = decode_audio(shared_audio(MIC_CLIP).read_bytes())
    silence = np.zeros(ENGINE_RATE_HZ * 2, dtype=np.float32)
    path = directory / "microphone.wav"
    path.write_bytes(
        wav_bytes(Audio(np.concatenate([silence[: ENGINE_RATE_HZ // 2], audio.samples, silence])))
    )
    with wave.open(str(path)) as check:
        assert check.getsampwidth() == 2
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Debian's chromium, headless, with a fake microphone and camera permission granted."""
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"chromium is absent ({CHROMIUM}): install Debian's chromium (`apt-get install chromium`)"
        )
    microphone = fake_microphone_wav(tmp_path_factory.mktemp("microphone"))
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone}",
            ],
        )
        try:
            yield launched
        finally:
            launched.close()


@contextmanager
def opened_page(
    browser: Browser, server: RunningServer, key: str, viewport: dict[str, int]
) -> Iterator[Page]:
    """The page in a fresh browser profile with the key typed into its key field; no script errors on it."""
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    try:
        page = context.new_page()
        script_errors: list[str] = []
        page.on("pageerror", lambda error: script_errors.append(str(error)))
        page.goto(server.base_url + "/")
        expect(page.get_by_role("heading", name="earshot", level=1)).to_be_visible()
        key_field = page.get_by_label("API key", exact=True)
        key_field.fill(key)
        key_field.press("Enter")
        yield page
        assert script_errors == []
    finally:
        context.close()


@pytest.fixture
def page(browser: Browser, keyed_server: RunningServer, key: str) -> Iterator[Page]:
    with opened_page(browser, keyed_server, key, DESKTOP) as opened:
        yield opened


def stored_document(api: httpx.Client, relpath: str) -> dict[str, Any]:
    """Transcribe a clip through the API (not streamed) and return its stored document."""
    path = shared_audio(relpath)
    response = api.post(
        "/v1/transcripts", files={"file": (path.name, path.read_bytes())}, data={"stream": "false"}
    )
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def test_the_page_and_its_files_are_served_beside_the_api_without_shadowing_it(
    keyed_server: RunningServer,
) -> None:
    base = keyed_server.base_url
    page = httpx.get(f"{base}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache" and page.headers["etag"]
    assert httpx.get(f"{base}/", headers={"If-None-Match": page.headers["etag"]}).status_code == 304
    assets = [*re.findall(r'(?:src|href)="(/web/[^"]+)"', page.text), "/web/capture-worklet.js"]
    expected_types = {".js": "text/javascript", ".css": "text/css"}
    for asset in assets:
        response = httpx.get(f"{base}{asset}")
        assert response.status_code == 200, asset
        assert response.headers["content-type"].startswith(expected_types[Path(asset).suffix]), asset
        assert response.headers["cache-control"] == "no-cache"

    missing = httpx.get(f"{base}/v1/no-such-route")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert httpx.get(f"{base}/v1/audio/transcriptions").status_code == 405
    assert httpx.get(f"{base}/web/../pyproject.toml").status_code == 404
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{base}/docs").status_code == 200
    schema_paths = httpx.get(f"{base}/openapi.json").json()["paths"]
    assert "/v1/transcripts" in schema_paths and "/" not in schema_paths


def test_upload_shows_the_text_growing_then_review_save_and_download_srt(
    page: Page, api: httpx.Client
) -> None:
    clip = shared_audio(UPLOAD_CLIP)
    page.get_by_label("Choose an audio or video file").set_input_files(clip)
    page.get_by_role("button", name="Transcribe", exact=True).click()

    status = page.locator("#upload-status")
    expect(status).to_contain_text("Done", timeout=TRANSCRIBE_TIMEOUT_MS)
    shown = page.locator("#upload-live").inner_text()
    assert share_of_words_present(UPLOAD_TEXT, shown) >= MOST_WORDS, shown
    progress = page.get_by_role("progressbar", name="Transcription progress")
    assert progress.evaluate("bar => bar.value") == 1

    review = page.get_by_role("region", name="Review and correct")
    expect(review).to_be_visible()
    first = review.get_by_role("textbox").first
    edited = "Reviewed: " + first.input_value().replace("selfish", "unselfish")
    first.fill(edited)
    review.get_by_role("button", name="Save corrections").click()
    expect(review.locator("#review-status")).to_contain_text("Saved")

    listed = api.get("/v1/transcripts").json()["data"]
    document = next(d for d in listed if d["name"] == clip.name)
    stored = api.get(f"/v1/transcripts/{document['id']}").json()
    assert stored["validated"][0]["text"] == edited
    assert stored["paragraphs"][0]["text"] != edited, "the machine version is kept beside the reviewed one"

    with page.expect_download() as downloading:
        review.get_by_role("button", name="SRT subtitles").click()
    download = downloading.value
    assert download.suggested_filename.endswith(".srt")
    srt = Path(download.path()).read_text()
    blocks = srt.strip().split("\n\n")
    cues = [SRT_BLOCK.match(block) for block in blocks]
    assert all(cues), srt
    assert [int(cue.group(1)) for cue in cues if cue] == list(range(1, len(blocks) + 1))
    assert edited in srt

    stored_list = page.get_by_role("region", name="Stored transcripts")
    expect(stored_list.get_by_role("listitem").filter(has_text=clip.name)).to_contain_text("reviewed")


def test_stored_list_opens_and_deletes_a_transcript(page: Page, api: httpx.Client) -> None:
    document = stored_document(api, LISTED_CLIP)
    stored_list = page.get_by_role("region", name="Stored transcripts")
    stored_list.get_by_role("button", name="Refresh").click()
    item = stored_list.get_by_role("listitem").filter(has_text=document["name"])
    expect(item).to_be_visible()

    item.get_by_role("button", name=f"Open {document['name']}").click()
    review = page.get_by_role("region", name="Review and correct")
    expect(review.get_by_role("textbox").first).to_have_value(document["paragraphs"][0]["text"])

    page.once("dialog", lambda dialog: dialog.accept())
    item.get_by_role("button", name=f"Delete {document['name']}").click()
    expect(item).to_have_count(0)
    expect(review).to_be_hidden()
    assert api.get(f"/v1/transcripts/{document['id']}").status_code == 404


def test_live_captions_show_the_words_spoken_into_the_microphone(page: Page) -> None:
    captions_section = page.get_by_role("region", name="Live captions")
    captions_section.get_by_role("button", name="Start captions").click()
    captions = page.locator("#captions")
    page.wait_for_function(
        "([words, needed]) => {"
        "  const shown = new Set(document.querySelector('#captions').innerText.toLowerCase()"
        "    .replace(/[^a-z' ]+/g, ' ').split(/\\s+/));"
        "  return words.filter((word) => shown.has(word)).length >= needed;"
        "}",
        arg=[words(MIC_TEXT), int(len(words(MIC_TEXT)) * MOST_WORDS)],
        timeout=90_000,
    )
    assert share_of_words_present(MIC_TEXT, captions.inner_text()) >= MOST_WORDS
    captions_section.get_by_role("button", name="Stop").click()
    expect(captions_section.get_by_role("status")).to_have_text("Not listening")
    expect(page.locator("#alerts")).to_be_empty()


def test_errors_from_the_server_are_shown_in_the_alert_region(
    browser: Browser, keyed_server: RunningServer
) -> None:
    with opened_page(browser, keyed_server, "es_not_a_real_key", DESKTOP) as page:
        alerts = page.get_by_role("alert")
        # What the page loads by itself is refused: one alert says the key is wrong.
        expect(alerts).to_contain_text("Enter a valid key")
        expect(alerts.get_by_role("button", name=re.compile("^Dismiss"))).to_have_count(1)
        # A file dropped on the drop zone is uploaded at once.
        clip = shared_audio(LISTED_CLIP)
        dropped = page.evaluate_handle(
            """([name, bytes]) => {
              const transfer = new DataTransfer();
              transfer.items.add(new File([new Uint8Array(bytes)], name, { type: "audio/wav" }));
              return transfer;
            }""",
            [clip.name, list(clip.read_bytes())],
        )
        page.dispatch_event("#drop-zone", "drop", {"dataTransfer": dropped})
        expect(alerts).to_contain_text("Transcription:")
        expect(page.locator("#upload-status")).to_contain_text("nothing was stored")
        # The server's own message is shown, not a generic one.
        message = httpx.get(
            f"{keyed_server.base_url}/v1/transcripts", headers={"Authorization": "Bearer es_not_a_real_key"}
        ).json()["error"]["message"]
        expect(alerts).to_contain_text(message)


def test_at_phone_width_nothing_overflows_and_every_control_is_reachable_with_tab(
    browser: Browser, keyed_server: RunningServer, key: str, api: httpx.Client
) -> None:
    document = stored_document(api, UPLOAD_CLIP)
    with opened_page(browser, keyed_server, key, PHONE) as page:
        item = page.get_by_role("listitem").filter(has_text=document["name"]).first
        item.get_by_role("button", name=f"Open {document['name']}").click()
        expect(page.get_by_role("region", name="Review and correct")).to_be_visible()

        width, scroll_width = page.evaluate("[innerWidth, document.scrollingElement.scrollWidth]")
        assert scroll_width <= width

        controls = page.evaluate(
            """() => {
              const all = document.querySelectorAll('a[href], button, input, select, textarea');
              const shown = [...all].filter((el) => !el.disabled && el.getClientRects().length > 0);
              shown.forEach((el, index) => { el.dataset.tabStop = String(index); });
              return shown.map((el) => el.id || el.textContent.trim() || el.tagName);
            }"""
        )
        page.evaluate("document.activeElement?.blur()")
        reached: set[str] = set()
        for _ in range(len(controls) * 2):
            page.keyboard.press("Tab")
            stop = page.evaluate("document.activeElement?.dataset.tabStop ?? null")
            if stop is not None:
                reached.add(stop)
        unreached = [name for index, name in enumerate(controls) if str(index) not in reached]
        assert not unreached, f"not reachable with Tab: {unreached}"
