"""The web UI in a real headless Chromium against a real gateway and simulated workers.

The module shares one simulated worker (real timings) behind one gateway (process launchers from
tests/fixtures/processes.py); every test leaves the worker idle and the queue empty, which an
autouse fixture checks. Each test opens its own browsers (tests/fixtures/browser.py) with fake
camera and microphone. The microphone plays a
looped WAV, a sentence spoken by espeak-ng then 4.5 s of silence, so the simulated duplex model hears
"speech", waits for the pause and answers. Screenshots of every page land in artifacts/screenshots/.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from omnikube.audio import resample

from tests.fixtures.browser import screenshot, wait_js
from tests.fixtures.processes import free_port, launch_gateway, launch_worker, wait_until
from tests.fixtures.speech import SENTENCE, speak
from tests.fixtures.video import make_clip

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

PLAYBACK_DELAY_MS = 350


def write_wav(path: Path, signal: np.ndarray, rate: int) -> Path:
    """16-bit WAV of `signal` (n samples, or n x channels) in -1..1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1 if signal.ndim == 1 else signal.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((signal * 32767).astype("<i2").tobytes())
    return path


def tone(seconds: float, rate: int, freq: float = 220.0, amplitude: float = 0.2) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    """The fake microphone: a spoken sentence (espeak-ng), then a pause, looped by Chromium."""
    rate = 48_000
    voiced = resample(speak(SENTENCE), 16_000, rate)
    signal = np.concatenate([voiced, np.zeros(int(rate * 4.5))])
    return write_wav(tmp_path_factory.mktemp("media") / "speech.wav", signal, rate)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Recordings: the worker writes them, the gateway serves them (one shared volume in a cluster)."""
    return tmp_path_factory.mktemp("web-data")


@pytest.fixture(scope="module")
def sim_worker(tmp_path_factory, data_dir):
    """One simulated worker with real timings, for the whole module."""
    log_dir = tmp_path_factory.mktemp("web-worker")
    config = log_dir / "config.json"
    config.write_text(json.dumps({"service": {"data_dir": str(data_dir)}}))
    worker = launch_worker(log_dir, env={"OMNIKUBE_CONFIG": str(config)})
    yield worker
    worker.kill()


@pytest.fixture(scope="module")
def service(sim_worker, tmp_path_factory, data_dir):
    """The gateway (plain HTTP) in front of the module's worker, with a non-default playback delay."""
    gateway = launch_gateway(tmp_path_factory.mktemp("web-gateway"), [sim_worker], args=["--data-dir", str(data_dir)],
                             config={"audio": {"playback_delay_ms": PLAYBACK_DELAY_MS}})
    yield gateway
    gateway.kill()


@pytest.fixture
def https_gateway(sim_worker, tmp_path):
    """A second gateway in front of the same worker, serving HTTPS with its self-signed certificate."""
    port = free_port()
    command = [sys.executable, "-m", "omnikube_gateway.cli", "--host", "127.0.0.1", "--port", str(port),
               "--workers", sim_worker.address, "--data-dir", str(tmp_path / "data"), "--log-level", "warning"]
    env = dict(os.environ, OMNIKUBE_CONFIG=str(tmp_path / "no-config.json"))
    with open(tmp_path / "gateway.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz", verify=False, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return process.poll() is not None

    try:
        wait_until(ready, 30, "the HTTPS gateway to be ready")
        assert process.poll() is None, (tmp_path / "gateway.log").read_text()
        yield url
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(autouse=True)
def idle_service(service):
    """Every test starts and ends with the worker idle and nobody queued."""

    def idle() -> bool:
        status = service.get("/status").json()
        return status.get("idle_workers") == 1 and status.get("queue_length") == 0

    wait_until(idle, 15, "the worker to be idle and the queue empty")
    yield
    wait_until(idle, 15, "the test to release the worker and leave the queue")


def open_page(driver, gateway, page: str) -> None:
    driver.get(f"{gateway.url}/{page}")
    wait_js(driver, "document.readyState === 'complete'")


def start_duplex(driver) -> None:
    wait_js(driver, "window.omnikube && omnikube.session.state === 'stopped'")
    driver.find_element(By.ID, "start").click()


def live_session(browser_factory, gateway, speech_wav, page: str = "audio_duplex"):
    """A browser holding a running duplex session (and so the only worker)."""
    driver = browser_factory(fake_audio=speech_wav)
    open_page(driver, gateway, page)
    start_duplex(driver)
    wait_js(driver, "omnikube.session.state === 'active'", 20)
    return driver


def stop_duplex(driver) -> None:
    driver.find_element(By.ID, "stop").click()
    wait_js(driver, "omnikube.session.state === 'stopped'", 10)


def text_of(driver, css: str) -> str:
    """Read text in one script call: the admin tables are rebuilt every poll, so a located element
    can go stale between find and read."""
    return driver.execute_script("return document.querySelector(arguments[0])?.innerText ?? ''", css)


def worker_states(gateway) -> list[str]:
    return [w["status"] for w in gateway.get("/workers").json()["workers"]]


def test_the_home_page_offers_every_mode(service, browser):
    open_page(browser, service, "")
    wait_js(browser, "document.querySelectorAll('#cards .card').length === 3")
    apps = browser.execute_script("return [...document.querySelectorAll('#cards .card')].map(c => c.dataset.app)")
    assert apps == ["turnbased", "omni", "audio_duplex"]
    wait_js(browser, "document.querySelector('#status-pill').textContent.includes('1/1 idle')")
    screenshot(browser, "home")


def test_a_turn_based_chat_round_trip_streams_text_and_plays_the_spoken_answer(service, browser):
    open_page(browser, service, "turnbased")
    wait_js(browser, "window.omnikube && document.querySelector('#voice select').options.length > 0")
    browser.find_element(By.ID, "opt-voice").click()
    # The player buffers as long as the gateway's config says (GET /api/frontend_defaults).
    wait_js(browser, f"Math.round(omnikube.player.schedule.delayS * 1000) === {PLAYBACK_DELAY_MS}")
    browser.find_element(By.ID, "input").send_keys("Hello, can you hear me?")
    browser.find_element(By.ID, "send").click()

    wait_js(browser, "document.querySelector('.msg.assistant')?.dataset.state === 'done'", 30)
    answer = browser.find_element(By.CSS_SELECTOR, ".msg.assistant .text").text
    assert "[simulated]" in answer and "Hello, can you hear me?" in answer
    # Speech arrived in several streamed chunks and the audio clock played at least one to the end.
    assert int(browser.execute_script("return document.querySelector('.msg.assistant').dataset.audioChunks")) >= 1
    wait_js(browser, "omnikube.player.playedChunks >= 1", 20)
    assert browser.execute_script("return omnikube.player.schedule.gaps") == 0
    assert browser.find_elements(By.CSS_SELECTOR, ".msg.assistant audio")  # replayable afterwards
    screenshot(browser, "turnbased")

    # The answer is part of the history sent with the next turn.
    assert browser.execute_script("return omnikube.state.history.map(m => m.role)") == ["user", "assistant"]


def ask(driver, text: str) -> None:
    """Type `text` into the chat page and wait for its answer to finish."""
    done = len(driver.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-state='done']"))
    driver.find_element(By.ID, "input").send_keys(text)
    driver.find_element(By.ID, "send").click()
    wait_js(driver, f"document.querySelectorAll(\".msg.assistant[data-state='done']\").length === {done + 1}", 30)


def test_editing_an_earlier_chat_message_drops_what_followed_and_resends_the_edit(service, browser):
    open_page(browser, service, "turnbased")
    wait_js(browser, "window.omnikube && document.querySelector('#voice select').options.length > 0")
    ask(browser, "What is a lighthouse?")
    ask(browser, "And a harbour?")
    browser.find_elements(By.CSS_SELECTOR, ".msg.user .edit")[0].click()
    assert browser.find_elements(By.CSS_SELECTOR, "#messages .msg") == []
    assert browser.execute_script("return omnikube.state.history.length") == 0
    box = browser.find_element(By.ID, "input")
    assert box.get_attribute("value") == "What is a lighthouse?"
    box.send_keys(" And who keeps one?")
    browser.find_element(By.ID, "send").click()
    wait_js(browser, "document.querySelector('.msg.assistant')?.dataset.state === 'done'", 30)
    history = browser.execute_script("return omnikube.state.history")
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[0]["content"] == "What is a lighthouse? And who keeps one?"
    assert "who keeps one" in history[1]["content"] and "harbour" not in history[1]["content"]


def download(driver, button_id: str) -> tuple[str, bytes]:
    """Click a button that starts a download; return the file's name and the bytes behind its blob URL."""
    driver.execute_script("""
        window.downloaded = null;
        const click = HTMLAnchorElement.prototype.click;
        HTMLAnchorElement.prototype.click = function () {
          if (!this.download) return click.call(this);
          fetch(this.href).then(r => r.arrayBuffer()).then(b => {
            let s = ""; new Uint8Array(b).forEach(c => (s += String.fromCharCode(c)));
            window.downloaded = { name: this.download, base64: btoa(s) };
          });
        };""")
    driver.find_element(By.ID, button_id).click()
    wait_js(driver, "window.downloaded !== null", 10)
    got = driver.execute_script("return window.downloaded")
    return got["name"], base64.b64decode(got["base64"])


def test_a_spoken_chat_exports_as_msgpack_with_the_answer_as_text_and_audio(service, browser):
    import msgpack

    open_page(browser, service, "turnbased")
    wait_js(browser, "window.omnikube && document.querySelector('#voice select').options.length > 0")
    browser.find_element(By.ID, "opt-voice").click()
    ask(browser, "Say something nice.")
    name, data = download(browser, "export")
    assert re.fullmatch(r"conversation_\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.msgpack", name)
    messages = msgpack.unpackb(data)["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[1]["content"] == [{"type": "text", "text": "Say something nice."}]
    (answer,) = messages[2]["content"]
    assert answer["type"] == "text_and_audio" and "[simulated]" in answer["text"]
    with wave.open(io.BytesIO(answer["audio"])) as speech:
        assert speech.getframerate() == 24000 and speech.getnframes() > 2400


def test_a_chat_speaks_with_the_tts_voice_chosen_apart_from_the_system_prompts(service, browser, tmp_path):
    tts_voice = write_wav(tmp_path / "tts voice.wav", tone(2.0, 16_000, freq=330.0), 16_000)
    open_page(browser, service, "turnbased")
    wait_js(browser, "window.omnikube && omnikube.ttsVoice.current !== null")
    browser.find_element(By.ID, "opt-voice").click()
    browser.find_element(By.CSS_SELECTOR, "#tts-voice input[type=file]").send_keys(str(tts_voice))
    wait_js(browser, "document.querySelector('#tts-voice select').selectedOptions[0].text.startsWith('Uploaded: tts voice.wav')", 10)
    browser.execute_script(SPY_ON_SOCKETS)
    ask(browser, "Speak to me.")
    request = json.loads(browser.execute_script("return window.sentFrames.find(f => JSON.parse(f).messages)"))
    assert abs(len(base64.b64decode(request["tts"]["ref_audio_data"])) // 4 - 32_000) <= 16  # 2 s at 16 kHz


def test_a_non_streaming_voice_answer_arrives_whole_and_plays(service, browser):
    open_page(browser, service, "turnbased")
    wait_js(browser, "window.omnikube && document.querySelector('#voice select').options.length > 0")
    browser.find_element(By.ID, "opt-streaming").click()
    browser.find_element(By.ID, "opt-voice").click()
    browser.find_element(By.ID, "input").send_keys("One piece please.")
    browser.find_element(By.ID, "send").click()
    wait_js(browser, "document.querySelector('.msg.assistant')?.dataset.state === 'done'", 30)
    assert browser.execute_script("return document.querySelector('.msg.assistant').dataset.audioChunks") == "1"
    assert "chat ·" in browser.find_element(By.CSS_SELECTOR, ".msg.assistant .meta").text
    # The whole answer is one buffer on the running audio clock (playing, or already played).
    assert browser.execute_script(
        "return omnikube.player.schedule.chunks === 1 && omnikube.player.ctx.state === 'running'"
        " && (omnikube.player.playing || omnikube.player.playedChunks === 1)")


def test_a_chat_turn_carries_an_uploaded_image_and_a_push_to_talk_recording(service, browser_factory, speech_wav, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    picture = tmp_path / "picture.png"
    Image.new("RGB", (64, 48), (200, 40, 40)).save(picture)
    browser = browser_factory(fake_audio=speech_wav)
    open_page(browser, service, "turnbased")
    wait_js(browser, "window.omnikube && document.querySelector('#voice select').options.length > 0")
    browser.find_element(By.ID, "file").send_keys(str(picture))
    wait_js(browser, "omnikube.state.attachments.some(a => a.kind === 'image')", 10)

    # Push-to-talk: hold the button while the (fake) microphone speaks, then let go.
    mic = browser.find_element(By.ID, "mic")
    ActionChains(browser).click_and_hold(mic).perform()
    wait_js(browser, "omnikube.state.recorder && omnikube.state.recorder.chunks.length >= 10", 10)  # >= 1 s
    ActionChains(browser).release(mic).perform()
    wait_js(browser, "omnikube.state.attachments.some(a => a.kind === 'audio')", 10)

    # The same with the Space bar held in the empty compose box.
    browser.find_element(By.ID, "input").click()
    ActionChains(browser).key_down(Keys.SPACE).perform()
    wait_js(browser, "omnikube.state.recorder && omnikube.state.recorder.chunks.length >= 5", 10)
    ActionChains(browser).key_up(Keys.SPACE).perform()
    wait_js(browser, "omnikube.state.attachments.filter(a => a.kind === 'audio').length === 2", 10)
    assert browser.find_element(By.ID, "input").get_attribute("value") == ""  # no stray space typed

    prompt = browser.find_element(By.ID, "system-prompt")
    prompt.send_keys(" Be brief.")  # spaces typed into other fields are text, not push-to-talk
    assert prompt.get_attribute("value").endswith(" Be brief.")
    assert browser.execute_script("return omnikube.state.recorder") is None
    browser.find_element(By.ID, "input").send_keys("What do you see and hear?")
    browser.find_element(By.ID, "send").click()
    wait_js(browser, "document.querySelector('.msg.assistant')?.dataset.state === 'done'", 30)
    answer = browser.find_element(By.CSS_SELECTOR, ".msg.assistant .text").text
    assert "I see 1 image (64x48)" in answer, answer
    assert "seconds of audio" in answer, answer
    assert browser.find_elements(By.CSS_SELECTOR, ".msg.user img") and browser.find_elements(By.CSS_SELECTOR, ".msg.user audio")


def test_a_chat_turn_carries_an_attached_video_in_omni_mode(service, browser, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4")
    open_page(browser, service, "turnbased")
    wait_js(browser, "window.omnikube && document.querySelector('#voice select').options.length > 0")
    browser.execute_script(SPY_ON_SOCKETS)
    browser.find_element(By.ID, "file").send_keys(str(clip))
    wait_js(browser, "omnikube.state.attachments.some(a => a.kind === 'video')", 10)
    browser.find_element(By.ID, "input").send_keys("What happens in this clip?")
    browser.find_element(By.ID, "send").click()
    wait_js(browser, "document.querySelector('.msg.assistant')?.dataset.state === 'done'", 30)
    assert "I was given 1 video." in browser.find_element(By.CSS_SELECTOR, ".msg.assistant .text").text
    request = json.loads(browser.execute_script("return window.sentFrames.find(f => JSON.parse(f).messages)"))
    assert request["omni_mode"] is True and request["image"]["max_slice_nums"] == 1
    video = request["messages"][-1]["content"][0]
    assert video["type"] == "video" and base64.b64decode(video["data"]) == clip.read_bytes()
    assert browser.find_elements(By.CSS_SELECTOR, ".msg.user video")


def test_over_https_the_chat_page_talks_to_the_gateway_through_wss(https_gateway, browser_factory):
    browser = browser_factory(flags=("--ignore-certificate-errors",))
    browser.get(f"{https_gateway}/turnbased")
    wait_js(browser, "window.omnikube && document.querySelector('#voice select').options.length > 0")
    browser.find_element(By.ID, "input").send_keys("Secure hello")
    browser.find_element(By.ID, "send").click()
    wait_js(browser, "document.querySelector('.msg.assistant')?.dataset.state === 'done'", 30)
    assert browser.execute_script("return omnikube.lastSocketUrl").startswith("wss://127.0.0.1:")
    assert "Secure hello" in browser.find_element(By.CSS_SELECTOR, ".msg.assistant .text").text


def test_with_api_keys_on_a_page_opened_with_its_key_works_and_one_without_is_refused(sim_worker, browser_factory, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# test key\nsecret-key-1\n")
    gateway = launch_gateway(tmp_path, [sim_worker], args=["--api-keys-file", str(keys)])
    try:
        browser = browser_factory()
        browser.get(f"{gateway.url}/turnbased")  # no key: the page loads, the chat is refused
        wait_js(browser, "window.omnikube && document.querySelector('#voice select').options.length > 0")
        browser.find_element(By.ID, "input").send_keys("Let me in")
        browser.find_element(By.ID, "send").click()
        wait_js(browser, "document.querySelector('.msg.assistant')?.dataset.state === 'error'", 15)
        assert "refused the connection" in browser.find_element(By.CSS_SELECTOR, ".msg.assistant").text

        browser.get(f"{gateway.url}/turnbased?api_key=secret-key-1")
        wait_js(browser, "window.omnikube && document.querySelector('#voice select').options.length > 0", 45)
        wait_js(browser, "document.querySelector('#status-pill').textContent.includes('idle')", 10)
        browser.find_element(By.ID, "input").send_keys("Let me in")
        browser.find_element(By.ID, "send").click()
        wait_js(browser, "document.querySelector('.msg.assistant')?.dataset.state === 'done'", 30)
        assert "Let me in" in browser.find_element(By.CSS_SELECTOR, ".msg.assistant .text").text
    finally:
        gateway.kill()


def test_an_audio_duplex_session_speaks_pauses_and_resumes(service, browser_factory, speech_wav):
    browser = browser_factory(fake_audio=speech_wav)
    open_page(browser, service, "audio_duplex")
    wait_js(browser, f"document.querySelector('#opt-delay').value === '{PLAYBACK_DELAY_MS}'")  # server default
    start_duplex(browser)
    wait_js(browser, "omnikube.session.state === 'active'", 20)
    assert browser.execute_script("return Math.round(omnikube.player.schedule.delayS * 1000)") == PLAYBACK_DELAY_MS
    # The model answers after hearing the speech, and its audio is scheduled for playback.
    wait_js(browser, "omnikube.player.schedule.chunks >= 1", 30)
    assert "[simulated]" in browser.find_element(By.ID, "log").text
    screenshot(browser, "audio_duplex")

    browser.find_element(By.ID, "pause").click()
    wait_js(browser, "omnikube.session.state === 'paused'", 10)
    wait_until(lambda: worker_states(service) == ["duplex_paused"], 10, "the worker to be paused")
    sent_while_paused = browser.execute_script("return omnikube.session.chunksSent")

    browser.find_element(By.ID, "pause").click()  # now labelled Resume
    wait_js(browser, "omnikube.session.state === 'active'", 10)
    wait_until(lambda: worker_states(service) == ["duplex_active"], 10, "the worker to be active again")
    wait_js(browser, f"omnikube.session.chunksSent > {sent_while_paused}", 10, "(audio flows again)")

    stop_duplex(browser)
    wait_until(lambda: worker_states(service) == ["idle"], 10, "the worker to be released")


def test_an_audio_duplex_call_recorded_in_the_browser_downloads_as_a_stereo_wav_of_both_sides(
        service, browser_factory, speech_wav):
    browser = browser_factory(fake_audio=speech_wav)
    open_page(browser, service, "audio_duplex")
    assert browser.find_element(By.ID, "opt-rec").is_selected()  # on by default, as in the demo
    start_duplex(browser)
    wait_js(browser, "omnikube.session.state === 'active'", 20)
    wait_js(browser, "omnikube.player.schedule.chunks >= 1", 30)
    seconds = browser.execute_script("return (Date.now() - omnikube.session.startedAt) / 1000")
    stop_duplex(browser)
    name, data = download(browser, "download-rec")
    assert re.fullmatch(r"session_\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.wav", name)
    with wave.open(io.BytesIO(data)) as recording:
        assert (recording.getnchannels(), recording.getframerate()) == (2, 24000)
        frames = np.frombuffer(recording.readframes(recording.getnframes()), dtype="<i2").reshape(-1, 2)
    assert frames.shape[0] / 24000 >= seconds - 1.5  # the whole call, give or take the last chunk
    assert np.abs(frames[:, 0]).max() > 1000  # the spoken sentence, on the left
    assert np.abs(frames[:, 1]).max() > 1000  # the model's answer, on the right


def test_a_call_recorded_in_the_browser_and_shared_replays_in_the_session_viewer(service, browser_factory, speech_wav):
    browser = live_session(browser_factory, service, speech_wav)
    wait_js(browser, "omnikube.player.schedule.chunks >= 1", 30)
    session_id = browser.execute_script("return omnikube.session.recordingId")
    stop_duplex(browser)
    browser.find_element(By.CSS_SELECTOR, "#share button.share").click()
    assert browser.find_element(By.ID, "share-upload").is_selected()  # offered, since Rec was on
    browser.find_element(By.CSS_SELECTOR, "#share dialog button.primary").click()
    wait_js(browser, "document.querySelector('#share dialog [role=status]').innerText.includes('/s/')", 15)
    uploaded = service.get(f"/api/sessions/{session_id}/assets/frontend_replay.wav")
    assert uploaded.status_code == 200
    with wave.open(io.BytesIO(uploaded.content)) as recording:
        assert recording.getnchannels() == 2
    browser.get(f"{service.url}/s/{session_id}")
    wait_js(browser, "[...document.querySelectorAll('#content h2')].some(h => h.textContent.startsWith('Frontend recording'))", 15)
    assert browser.execute_script("return document.querySelector('#content audio').src").endswith("frontend_replay.wav")


def test_in_file_mode_the_duplex_model_hears_the_file_paced_as_a_microphone_then_silence(service, browser, speech_wav):
    open_page(browser, service, "audio_duplex")  # the browser's own fake microphone beeps: not what is sent
    Select(browser.find_element(By.ID, "opt-source")).select_by_value("file")
    browser.find_element(By.ID, "source-file").send_keys(str(speech_wav))
    browser.execute_script(SPY_ON_SOCKETS)
    start_duplex(browser)
    wait_js(browser, "omnikube.session.state === 'active'", 20)
    with wave.open(str(speech_wav)) as source:
        file_s = source.getnframes() / source.getframerate()
    wait_js(browser, f"omnikube.session.chunksSent >= {int(file_s) + 2}", 20)
    wait_js(browser, "omnikube.player.schedule.chunks >= 1", 20)  # it answered what the file said
    frames = [json.loads(f) for f in browser.execute_script("return window.sentFrames")]
    chunks = [np.frombuffer(base64.b64decode(f["audio_base64"]), dtype="<f4") for f in frames if f["type"] == "audio_chunk"]
    assert all(c.size == 16000 for c in chunks)
    assert np.sqrt(np.mean(chunks[0] ** 2)) > 0.01  # the spoken sentence opens the file
    assert not np.any(chunks[int(file_s) + 1])  # after the file: exact silence, not a microphone
    assert "ended; the model hears silence now" in browser.find_element(By.ID, "log").text
    stop_duplex(browser)


def test_in_file_mode_an_omni_session_sees_the_video_file_instead_of_the_camera(service, browser, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", seconds=3.0, size="160x120")
    open_page(browser, service, "omni")
    wait_js(browser, "document.querySelector('#camera').videoWidth > 0", 15, "(camera preview)")
    Select(browser.find_element(By.ID, "opt-source")).select_by_value("file")
    browser.find_element(By.ID, "source-file").send_keys(str(clip))
    start_duplex(browser)
    wait_js(browser, "omnikube.session.state === 'active'", 20)
    wait_js(browser, "omnikube.session.last.vision_slices >= 1", 15)  # frames reached the model
    assert browser.execute_script("return document.querySelector('#camera').videoWidth") == 160  # the file's
    stop_duplex(browser)
    wait_js(browser, "document.querySelector('#camera').srcObject !== null", 5, "(the camera is back)")


def omni_session_with_frames(browser_factory, service, speech_wav):
    """A browser in a live omni session whose camera frames reached the model."""
    browser = browser_factory(fake_audio=speech_wav)
    open_page(browser, service, "omni")
    wait_js(browser, "document.querySelector('#camera').videoWidth > 0", 15, "(camera preview)")
    start_duplex(browser)
    wait_js(browser, "omnikube.session.state === 'active'", 20)
    # vision_slices in the worker's result counts the frames it received with the chunk.
    wait_js(browser, "omnikube.session.last.vision_slices >= 1", 15)
    wait_js(browser, "omnikube.player.schedule.chunks >= 1", 30)
    return browser


def test_an_omni_session_sends_camera_frames_with_the_audio(service, browser_factory, speech_wav):
    browser = omni_session_with_frames(browser_factory, service, speech_wav)
    screenshot(browser, "omni")
    stop_duplex(browser)


def metric(driver, name: str) -> dict:
    return driver.execute_script(
        "const m = document.querySelector(`#metrics [data-metric='${arguments[0]}']`);"
        "return m && {value: m.querySelector('b').textContent, level: m.dataset.level ?? null}", name)


def test_the_omni_page_shows_the_models_words_over_the_picture_and_flips_the_camera(service, browser_factory, speech_wav):
    browser = omni_session_with_frames(browser_factory, service, speech_wav)
    wait_js(browser, "document.querySelector('#subtitles').textContent.includes('[simulated]')", 20)
    browser.find_element(By.ID, "flip").click()
    wait_js(browser, "document.querySelector('#camera').srcObject?.getVideoTracks()[0]?.getConstraints().facingMode"
                     " === 'environment' && document.querySelector('#camera').readyState >= 2", 10)
    # One result per chunk, in order: a result past the chunks sent so far answers a chunk sent from
    # the new camera, and it saw a frame.
    sent_at_flip = browser.execute_script("return omnikube.session.chunksSent")
    wait_js(browser, f"omnikube.session.results > {sent_at_flip}", 10)
    assert browser.execute_script("return omnikube.session.last.vision_slices") >= 1
    stop_duplex(browser)


def media_streams(data: bytes) -> dict[str, dict]:
    """What PyAV finds in a recording: per stream type, its codec, channels and length in seconds
    (from the packets: a browser's WebM has no duration in its header)."""
    import av

    found: dict[str, dict] = {}
    with av.open(io.BytesIO(data)) as container:
        for stream in container.streams:
            found[stream.type] = {"codec": stream.codec_context.name, "end_s": 0.0,
                                  "channels": getattr(stream.codec_context, "channels", None)}
        for packet in container.demux():
            if packet.pts is not None:
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                entry = found[packet.stream.type]
                entry["end_s"] = max(entry["end_s"], end)
    return found


def recorded_omni_call(browser_factory, service, speech_wav) -> tuple[object, float]:
    """A browser after an omni call whose model spoke (its subtitles shown) and was stopped; the call's length in s."""
    browser = omni_session_with_frames(browser_factory, service, speech_wav)
    assert browser.find_element(By.ID, "opt-rec").is_selected()
    wait_js(browser, "document.querySelector('#subtitles').textContent.includes('[simulated]')", 20)
    seconds = browser.execute_script("return (Date.now() - omnikube.session.startedAt) / 1000")
    stop_duplex(browser)
    wait_js(browser, "!document.querySelector('#download-rec').hidden", 10, "(the recording is ready)")
    return browser, seconds


def test_an_omni_call_recorded_in_the_browser_downloads_as_a_video_with_both_voices_of_the_calls_length(
        service, browser_factory, speech_wav):
    browser, seconds = recorded_omni_call(browser_factory, service, speech_wav)
    name, data = download(browser, "download-rec")
    assert re.fullmatch(r"session_\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.webm", name)  # Auto: WebM
    streams = media_streams(data)
    assert streams["video"]["codec"] in ("vp8", "vp9", "libvpx", "libvpx-vp9"), streams
    assert streams["audio"]["codec"] in ("opus", "libopus") and streams["audio"]["channels"] == 2, streams
    for kind in ("video", "audio"):
        assert abs(streams[kind]["end_s"] - seconds) < 1.0, (kind, streams[kind], seconds)


def white_share_of_the_subtitle_band(data: bytes) -> tuple[float, float]:
    """The share of white pixels where the subtitles go (the lower third), in the recording's first
    and last frames: Chromium's fake camera is green, so white there is burnt-in text."""
    import av

    with av.open(io.BytesIO(data)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    shares = []
    for image in (frames[0], frames[-1]):
        band = image[int(image.shape[0] * 0.6):int(image.shape[0] * 0.92)]
        shares.append(float((band.min(axis=2) > 200).mean()))
    return shares[0], shares[1]


def test_an_omni_call_recorded_in_the_browser_has_the_models_words_burnt_into_the_picture(
        service, browser_factory, speech_wav):
    browser, _ = recorded_omni_call(browser_factory, service, speech_wav)  # stopped while the words showed
    _, data = download(browser, "download-rec")
    before, after = white_share_of_the_subtitle_band(data)
    assert before == 0.0  # the call's first frame: the model had not spoken yet
    assert after > 0.003, after  # its last: the subtitles' letters


def test_an_omni_call_recorded_in_the_mp4_format_chosen_in_the_rec_panel_downloads_as_an_mp4(
        service, browser_factory, speech_wav):
    browser = browser_factory(fake_audio=speech_wav)
    open_page(browser, service, "omni")
    wait_js(browser, "document.querySelector('#camera').videoWidth > 0", 15, "(camera preview)")
    browser.find_element(By.CSS_SELECTOR, "#rec-panel summary").click()
    formats = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#opt-rec-format option')].map(o => [o.value, !o.disabled]))")
    assert formats["video/mp4;codecs=avc1,opus"] is True, formats  # what this Chromium's MediaRecorder can write
    Select(browser.find_element(By.ID, "opt-rec-format")).select_by_value("video/mp4;codecs=avc1,opus")
    start_duplex(browser)
    wait_js(browser, "omnikube.session.state === 'active'", 20)
    wait_js(browser, "omnikube.session.chunksSent >= 3", 15)
    stop_duplex(browser)
    wait_js(browser, "!document.querySelector('#download-rec').hidden", 10, "(the recording is ready)")
    name, data = download(browser, "download-rec")
    assert name.endswith(".mp4")
    streams = media_streams(data)
    assert streams["video"]["codec"] in ("h264", "libopenh264") and streams["audio"]["codec"] in ("opus", "libopus"), streams


def test_an_omni_call_recorded_in_the_browser_and_shared_plays_as_a_video_in_the_session_viewer(
        service, browser_factory, speech_wav):
    browser, seconds = recorded_omni_call(browser_factory, service, speech_wav)
    session_id = browser.execute_script("return omnikube.session.recordingId")
    browser.find_element(By.CSS_SELECTOR, "#share button.share").click()
    assert browser.find_element(By.ID, "share-upload").is_selected()
    browser.find_element(By.CSS_SELECTOR, "#share dialog button.primary").click()
    wait_js(browser, "document.querySelector('#share dialog [role=status]').innerText.includes('/s/')", 20)
    uploaded = service.get(f"/api/sessions/{session_id}/assets/frontend_replay.webm")
    assert uploaded.status_code == 200 and uploaded.headers["content-type"].startswith("video/webm")
    assert set(media_streams(uploaded.content)) >= {"video", "audio"}
    browser.get(f"{service.url}/s/{session_id}")
    # The viewer's player has loaded it through the gateway and found its length (a WebM without one in its header).
    wait_js(browser, "Number.isFinite(document.querySelector('#frontend-replay')?.duration)", 20)
    duration = browser.execute_script("return document.querySelector('#frontend-replay').duration")
    assert abs(duration - seconds) < 1.0, (duration, seconds)
    assert browser.execute_script("return document.querySelector('#frontend-replay').videoWidth") > 0


def test_leaving_the_omni_page_turns_the_camera_off_even_if_the_page_is_kept_for_back(service, browser):
    open_page(browser, service, "omni")
    wait_js(browser, "document.querySelector('#camera').videoWidth > 0", 15, "(camera preview)")
    browser.execute_script("window.dispatchEvent(new PageTransitionEvent('pagehide', {persisted: true}))")
    assert browser.execute_script("return document.querySelector('#camera').srcObject.getVideoTracks()[0].readyState") == "ended"


def test_the_omni_metrics_grid_shows_latency_ttfs_drift_and_vision_once_the_model_spoke(service, browser_factory, speech_wav):
    browser = omni_session_with_frames(browser_factory, service, speech_wav)
    wait_js(browser, "omnikube.session.timing.ttfsMs != null", 30, "(a listening result, then a speaking one)")
    wait_js(browser, "document.querySelector(\"#metrics [data-metric='ttfs'] b\").textContent.endsWith(' ms')", 5)
    for name in ("latency", "ttfs", "drift"):
        shown = metric(browser, name)
        assert re.fullmatch(r"[+-]?\d+ ms", shown["value"]), (name, shown)
        assert shown["level"] in ("good", "fair", "poor")
    assert metric(browser, "vision")["value"].startswith("Std · ")  # one slice per frame unless HD
    stop_duplex(browser)


def test_an_omni_session_replays_as_a_video_in_the_session_viewer(service, browser_factory, speech_wav):
    browser = omni_session_with_frames(browser_factory, service, speech_wav)
    session_id = browser.execute_script("return omnikube.session.recordingId")
    stop_duplex(browser)
    wait_until(lambda: "merged_replay_video" in (service.get(f"/api/sessions/{session_id}/recording").json()
                                                 if service.get(f"/api/sessions/{session_id}/recording").status_code == 200
                                                 else {}), 60, "the worker to make the replay video")
    chunks = len(service.get(f"/api/sessions/{session_id}/recording").json()["chunks"])
    open_page(browser, service, f"s/{session_id}")
    # Chromium has loaded the worker's MP4 through the gateway and knows its length: about a second a chunk.
    wait_js(browser, "document.querySelector('#content video')?.readyState >= 1", 20)
    duration = browser.execute_script("return document.querySelector('#content video').duration")
    assert abs(duration - chunks) < 1.0
    screenshot(browser, "session-viewer-omni-video")


def test_the_viewers_timeline_shows_each_chunks_frame_and_seeks_the_replay_to_it(service, browser_factory, speech_wav):
    browser = omni_session_with_frames(browser_factory, service, speech_wav)
    session_id = browser.execute_script("return omnikube.session.recordingId")
    stop_duplex(browser)
    wait_until(lambda: service.get(f"/api/sessions/{session_id}/recording").status_code == 200, 60,
               "the worker to finalise the recording")
    chunks = service.get(f"/api/sessions/{session_id}/recording").json()["chunks"]
    open_page(browser, service, f"s/{session_id}")
    wait_js(browser, "[...document.querySelectorAll('#content img.thumb')].some(i => i.complete && i.naturalWidth > 0)", 20)
    third = chunks[2]
    browser.find_elements(By.CSS_SELECTOR, "#content button.seek")[2].click()
    wait_js(browser, f"Math.abs(document.querySelector('#replay').currentTime - {third['replay_offset_s']}) < 0.5", 10)


def test_a_half_duplex_call_answers_after_the_user_pauses_and_reopens_the_microphone(service, browser_factory, speech_wav):
    browser = browser_factory(fake_audio=speech_wav)
    open_page(browser, service, "half_duplex")
    wait_js(browser, "window.omnikube && omnikube.session.state === 'stopped'")
    browser.find_element(By.ID, "start").click()
    wait_js(browser, "omnikube.session.state === 'listening'", 20)
    # The server's VAD hears the 1.5 s of speech end, and the model answers with speech.
    wait_js(browser, "omnikube.session.state === 'generating'", 20)
    assert browser.execute_script("return omnikube.session.micOpen") is False  # no echo into the model
    wait_js(browser, "omnikube.player.schedule.chunks >= 1", 20)
    wait_js(browser, "omnikube.session.turns === 1", 30)
    assert "[simulated]" in browser.find_element(By.ID, "log").text
    wait_js(browser, "omnikube.session.state === 'listening' && omnikube.session.micOpen", 30)
    screenshot(browser, "half_duplex")
    browser.find_element(By.ID, "stop").click()
    wait_js(browser, "omnikube.session.state === 'stopped'", 10)


SPY_ON_SOCKETS = """
window.sentFrames = [];
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) { window.sentFrames.push(data); return send.call(this, data); };
"""


def test_the_half_duplex_temperature_the_user_sets_goes_into_the_prepare(service, browser_factory, speech_wav):
    browser = browser_factory(fake_audio=speech_wav)
    open_page(browser, service, "half_duplex")
    wait_js(browser, "window.omnikube && omnikube.session.state === 'stopped'")
    temperature = browser.find_element(By.ID, "opt-temperature")
    assert temperature.get_attribute("value") == "0.7"  # the demo's default
    temperature.clear()
    temperature.send_keys("1.3")
    browser.execute_script(SPY_ON_SOCKETS)
    browser.find_element(By.ID, "start").click()
    wait_js(browser, "omnikube.session.state === 'listening'", 20)
    prepare = json.loads(browser.execute_script("return window.sentFrames.find(f => JSON.parse(f).type === 'prepare')"))
    assert prepare["config"]["generation"]["temperature"] == 1.3
    browser.find_element(By.ID, "stop").click()
    wait_js(browser, "omnikube.session.state === 'stopped'", 10)


def build_system_content(driver, audio: Path) -> None:
    """In the page's system content editor: text A, an audio file, text B; then B moved above the
    audio, and a stray empty text added and deleted. The list ends: A, B, the audio."""
    editor = "#system-content"
    driver.find_element(By.CSS_SELECTOR, f"{editor} .add-text").click()
    driver.find_element(By.CSS_SELECTOR, f"{editor} li:last-child textarea").send_keys("Item A.")
    driver.find_element(By.CSS_SELECTOR, f"{editor} input[type=file]").send_keys(str(audio))
    wait_js(driver, f"document.querySelectorAll('{editor} li[data-type=audio]').length === 1", 10)
    driver.find_element(By.CSS_SELECTOR, f"{editor} .add-text").click()
    driver.find_element(By.CSS_SELECTOR, f"{editor} li:last-child textarea").send_keys("Item B.")
    driver.find_element(By.CSS_SELECTOR, f"{editor} li:last-child .up").click()
    driver.find_element(By.CSS_SELECTOR, f"{editor} .add-text").click()
    driver.find_element(By.CSS_SELECTOR, f"{editor} li:last-child .delete").click()
    types = driver.execute_script(f"return [...document.querySelectorAll('{editor} li')].map(li => li.dataset.type)")
    assert types == ["text", "text", "audio"]


def assert_system_items(items: list[dict], prompt: str) -> None:
    """The prompt, then the editor's A, B and the 1.5 s audio item (16 kHz float32), in that order."""
    assert [i["type"] for i in items] == ["text", "text", "text", "audio"], [i["type"] for i in items]
    assert [i.get("text") for i in items[:3]] == [prompt, "Item A.", "Item B."]
    assert abs(len(base64.b64decode(items[3]["data"])) // 4 - 24_000) <= 16


def test_the_chat_sends_the_system_content_editors_text_and_audio_items_in_order(service, browser, tmp_path):
    clip = write_wav(tmp_path / "context.wav", tone(1.5, 44_100), 44_100)
    open_page(browser, service, "turnbased")
    wait_js(browser, "window.omnikube && document.querySelector('#voice select').options.length > 0")
    build_system_content(browser, clip)
    browser.execute_script(SPY_ON_SOCKETS)
    ask(browser, "Hello there.")
    request = json.loads(browser.execute_script("return window.sentFrames.find(f => JSON.parse(f).messages)"))
    system = request["messages"][0]
    assert system["role"] == "system"
    assert_system_items(system["content"], "You are a helpful assistant. Answer briefly and clearly.")
    # The worker took the list: its recording of the session has the texts of the system message, in order.
    session_id = browser.find_element(By.CSS_SELECTOR, ".msg.assistant .meta a").get_attribute("href").rsplit("/", 1)[-1]
    meta = service.get(f"/api/sessions/{session_id}").json()
    assert meta["config"]["system_prompt"] == "You are a helpful assistant. Answer briefly and clearly. Item A. Item B."


def test_the_half_duplex_prepare_carries_the_system_content_editors_items_in_order(service, browser_factory, speech_wav, tmp_path):
    clip = write_wav(tmp_path / "context.wav", tone(1.5, 16_000), 16_000)
    browser = browser_factory(fake_audio=speech_wav)
    open_page(browser, service, "half_duplex")
    wait_js(browser, "window.omnikube && omnikube.session.state === 'stopped'")
    build_system_content(browser, clip)
    browser.execute_script(SPY_ON_SOCKETS)
    browser.find_element(By.ID, "start").click()
    wait_js(browser, "omnikube.session.state === 'listening'", 20)
    prepare = json.loads(browser.execute_script("return window.sentFrames.find(f => JSON.parse(f).type === 'prepare')"))
    # The simulated worker has no default voice, so the list is the prompt and the editor's items.
    assert_system_items(prepare["system_content"], "You are a helpful voice assistant. Keep answers short.")
    browser.find_element(By.ID, "stop").click()
    wait_js(browser, "omnikube.session.state === 'stopped'", 10)


def test_the_system_content_editor_leaves_the_remembered_prompt_alone_and_reset_empties_it(service, browser, tmp_path):
    clip = write_wav(tmp_path / "context.wav", tone(1.5, 16_000), 16_000)
    open_page(browser, service, "turnbased")
    wait_js(browser, "window.omnikube")
    prompt = browser.find_element(By.ID, "system-prompt")
    prompt.clear()
    prompt.send_keys("You are a pirate.")
    build_system_content(browser, clip)
    open_page(browser, service, "turnbased")
    wait_js(browser, "window.omnikube")
    # The prompt is remembered; the editor's items are not (its text boxes carry no data-remember).
    assert browser.find_element(By.ID, "system-prompt").get_attribute("value") == "You are a pirate."
    assert browser.execute_script("return omnikube.systemEditor.items()") == []
    build_system_content(browser, clip)
    browser.find_element(By.ID, "reset-settings").click()
    assert browser.execute_script("return omnikube.systemEditor.items()") == []
    assert browser.find_elements(By.CSS_SELECTOR, "#system-content li") == []
    assert browser.find_element(By.ID, "system-prompt").get_attribute("value").startswith("You are a helpful assistant.")


@pytest.mark.parametrize("page, length_penalty, max_kv", [("audio_duplex", "1.05", "131072"), ("omni", "1.1", "8192")])
def test_each_duplex_page_starts_from_the_demos_defaults_for_its_mode(service, browser, page, length_penalty, max_kv):
    open_page(browser, service, page)
    wait_js(browser, "window.omnikube && omnikube.session.state === 'stopped'")
    assert browser.find_element(By.ID, "opt-length-penalty").get_attribute("value") == length_penalty
    assert browser.find_element(By.ID, "opt-max-kv").get_attribute("max") == max_kv


def test_the_language_switch_shows_a_live_duplex_page_in_chinese_and_is_remembered(service, browser_factory, speech_wav):
    browser = browser_factory(fake_audio=speech_wav)
    open_page(browser, service, "audio_duplex")
    wait_js(browser, "document.querySelector('#lang')?.textContent === '中文'")
    browser.find_element(By.ID, "lang").click()
    wait_js(browser, "document.querySelector('#start').textContent === '开始'")
    assert browser.find_element(By.ID, "heading").text == "语音全双工"
    assert browser.find_element(By.ID, "lamp").text == "已停止"
    start_duplex(browser)
    wait_js(browser, "omnikube.session.state === 'active'", 20)
    wait_js(browser, "document.querySelector('#lamp').textContent === '通话中'", 5)  # written by the page later
    assert browser.find_element(By.ID, "pause").text == "暂停"
    screenshot(browser, "audio_duplex_zh")
    stop_duplex(browser)
    open_page(browser, service, "audio_duplex")
    wait_js(browser, "document.querySelector('#start').textContent === '开始'")  # remembered
    browser.find_element(By.ID, "lang").click()
    wait_js(browser, "document.querySelector('#start').textContent === 'Start'")


def test_the_faq_opens_with_the_pages_questions_and_follows_the_language(service, browser):
    open_page(browser, service, "omni")
    browser.find_element(By.ID, "faq-button").click()
    wait_js(browser, "document.querySelectorAll('#faq details').length >= 4", 10)
    summaries = browser.execute_script("return [...document.querySelectorAll('#faq summary')].map(s => s.textContent)")
    assert summaries[0] == "What is omni full duplex?"
    assert browser.execute_script("return document.querySelector('#faq details').open")  # the first answer shows
    assert browser.execute_script("return document.querySelector('#faq details strong')?.textContent") == "HD vision"  # Markdown
    screenshot(browser, "omni-faq")
    browser.find_element(By.ID, "lang").click()
    wait_js(browser, "document.querySelector('#faq summary').textContent === '什么是全模态全双工？'", 10)


def test_a_gateway_whose_default_language_is_chinese_serves_chinese_pages_and_leaves_messages_alone(
        sim_worker, browser, tmp_path):
    gateway = launch_gateway(tmp_path, [sim_worker], args=["--lang", "zh"])
    try:
        browser.get(f"{gateway.url}/turnbased")
        wait_js(browser, "document.querySelector('#send').textContent === '发送'", 10)
        assert browser.find_element(By.ID, "clear").text == "新对话"
        ask(browser, "Stop")
        assert browser.find_element(By.CSS_SELECTOR, ".msg.user").text.startswith("Stop")  # what the user wrote
    finally:
        gateway.kill()


def test_the_chat_pages_settings_are_remembered_across_visits_until_reset(service, browser):
    open_page(browser, service, "turnbased")
    wait_js(browser, "window.omnikube")
    tokens = browser.find_element(By.ID, "opt-max-tokens")
    tokens.clear()
    tokens.send_keys("512")
    browser.find_element(By.ID, "opt-streaming").click()  # off
    prompt = browser.find_element(By.ID, "system-prompt")
    prompt.clear()
    prompt.send_keys("You are a pirate.")
    open_page(browser, service, "turnbased")
    wait_js(browser, "window.omnikube")
    assert browser.find_element(By.ID, "opt-max-tokens").get_attribute("value") == "512"
    assert not browser.find_element(By.ID, "opt-streaming").is_selected()
    assert browser.find_element(By.ID, "system-prompt").get_attribute("value") == "You are a pirate."
    browser.find_element(By.ID, "reset-settings").click()
    open_page(browser, service, "turnbased")
    wait_js(browser, "window.omnikube")
    assert browser.find_element(By.ID, "opt-max-tokens").get_attribute("value") == "256"
    assert browser.find_element(By.ID, "opt-streaming").is_selected()


def test_each_duplex_mode_remembers_its_own_settings_and_the_server_delay_stays_the_default(service, browser):
    open_page(browser, service, "audio_duplex")
    wait_js(browser, f"document.querySelector('#opt-delay').value === '{PLAYBACK_DELAY_MS}'")
    penalty = browser.find_element(By.ID, "opt-length-penalty")
    browser.execute_script("arguments[0].value = '1.3'; arguments[0].dispatchEvent(new Event('change'))", penalty)
    open_page(browser, service, "audio_duplex")
    wait_js(browser, "window.omnikube && omnikube.session.state === 'stopped'")
    assert browser.find_element(By.ID, "opt-length-penalty").get_attribute("value") == "1.3"
    open_page(browser, service, "omni")  # the other mode keeps its own defaults
    wait_js(browser, "window.omnikube && omnikube.session.state === 'stopped'")
    assert browser.find_element(By.ID, "opt-length-penalty").get_attribute("value") == "1.1"
    open_page(browser, service, "audio_duplex")
    wait_js(browser, f"document.querySelector('#opt-delay').value === '{PLAYBACK_DELAY_MS}'")
    browser.execute_script("document.querySelector('#reset-settings').closest('details').open = true")
    browser.find_element(By.ID, "reset-settings").click()
    assert browser.find_element(By.ID, "opt-length-penalty").get_attribute("value") == "1.05"
    assert browser.find_element(By.ID, "opt-delay").get_attribute("value") == str(PLAYBACK_DELAY_MS)


def choose_device(driver, kind: str, label: str) -> str:
    """Pick a device by its label in the page's device picker; returns its id."""
    driver.execute_script("document.querySelector('#devices').closest('details')?.setAttribute('open', '')")
    wait_js(driver, f"[...document.querySelectorAll('#device-{kind} option')].some(o => o.text === '{label}')")
    select = Select(driver.find_element(By.ID, f"device-{kind}"))
    select.select_by_visible_text(label)
    return select.first_selected_option.get_attribute("value")


def test_the_chosen_microphone_and_speaker_carry_the_duplex_session_and_are_remembered(
        service, browser_factory, speech_wav):
    driver = browser_factory(fake_audio=speech_wav)
    open_page(driver, service, "audio_duplex")
    microphone = choose_device(driver, "audioinput", "Fake Audio Input 2")
    speaker = choose_device(driver, "audiooutput", "Fake Audio Output 1")
    start_duplex(driver)
    wait_js(driver, "omnikube.session.state === 'active'", 20)
    assert driver.execute_script("return omnikube.session.capture.stream.getAudioTracks()[0].getSettings().deviceId") == microphone
    wait_js(driver, f"omnikube.player.ctx && omnikube.player.ctx.sinkId === '{speaker}'")
    stop_duplex(driver)
    open_page(driver, service, "half_duplex")  # the same hardware on every page
    wait_js(driver, f"document.querySelector('#device-audioinput').value === '{microphone}'")
    assert driver.find_element(By.ID, "device-audiooutput").get_attribute("value") == speaker


def test_an_uploaded_voice_and_an_edited_system_prompt_go_into_the_duplex_prepare(
    service, browser_factory, speech_wav, tmp_path
):
    voice = write_wav(tmp_path / "my voice.wav", np.stack([tone(2.0, 44_100)] * 2, axis=1), 44_100)
    too_long = write_wav(tmp_path / "long.wav", tone(25.0, 16_000), 16_000)

    browser = browser_factory(fake_audio=speech_wav)
    open_page(browser, service, "audio_duplex")
    wait_js(browser, "window.omnikube && omnikube.session.state === 'stopped'")
    upload = browser.find_element(By.CSS_SELECTOR, "#voice input[type=file]")
    upload.send_keys(str(too_long))
    wait_js(browser, "document.querySelector('#voice').innerText.includes('Audio too long: 25.0s (max 20s)')", 10)
    upload.send_keys(str(voice))
    wait_js(browser, "document.querySelector('#voice select').selectedOptions[0].text.startsWith('Uploaded: my voice.wav')", 10)

    prompt = browser.find_element(By.ID, "system-prompt")
    prompt.clear()
    prompt.send_keys("You are a pirate. Answer in one sentence.")
    browser.execute_script(SPY_ON_SOCKETS)
    start_duplex(browser)
    wait_js(browser, "omnikube.session.state === 'active'", 20)
    prepare = json.loads(browser.execute_script(
        "return window.sentFrames.find(f => JSON.parse(f).type === 'prepare')"))
    assert prepare["system_prompt"] == "You are a pirate. Answer in one sentence."
    # 2 s of 44.1 kHz stereo became 2 s of 16 kHz mono float32: 32000 samples * 4 bytes.
    ref = base64.b64decode(prepare["ref_audio_base64"])
    assert abs(len(ref) // 4 - 32_000) <= 16
    assert 0.1 < np.abs(np.frombuffer(ref, "<f4")).max() < 0.3
    assert "tts_ref_audio_base64" not in prepare  # the TTS speaks with the LLM's voice unless told
    stop_duplex(browser)


def test_a_separate_tts_voice_goes_into_the_duplex_prepare_beside_the_llm_voice(service, browser_factory, speech_wav, tmp_path):
    tts_voice = write_wav(tmp_path / "tts voice.wav", tone(3.0, 16_000, freq=330.0), 16_000)
    browser = browser_factory(fake_audio=speech_wav)
    open_page(browser, service, "audio_duplex")
    wait_js(browser, "window.omnikube && omnikube.session.state === 'stopped'")
    assert Select(browser.find_element(By.CSS_SELECTOR, "#tts-voice select")).first_selected_option.text == \
        "Same as the LLM voice"
    browser.find_element(By.CSS_SELECTOR, "#tts-voice input[type=file]").send_keys(str(tts_voice))
    wait_js(browser, "document.querySelector('#tts-voice select').selectedOptions[0].text.startsWith('Uploaded: tts voice.wav')", 10)
    browser.execute_script(SPY_ON_SOCKETS)
    start_duplex(browser)
    wait_js(browser, "omnikube.session.state === 'active'", 20)
    prepare = json.loads(browser.execute_script("return window.sentFrames.find(f => JSON.parse(f).type === 'prepare')"))
    assert abs(len(base64.b64decode(prepare["tts_ref_audio_base64"])) // 4 - 48_000) <= 16  # 3 s at 16 kHz
    assert prepare.get("ref_audio_base64") != prepare["tts_ref_audio_base64"]
    stop_duplex(browser)


def test_a_shipped_preset_chosen_on_the_duplex_page_becomes_the_sessions_system_prompt(service, browser_factory, speech_wav):
    browser = browser_factory(fake_audio=speech_wav)
    open_page(browser, service, "audio_duplex")
    wait_js(browser, "window.omnikube && omnikube.session.state === 'stopped'")
    wait_js(browser, "[...document.querySelectorAll('#voice option')].some(o => o.value === 'preset:english_call')", 10)
    Select(browser.find_element(By.CSS_SELECTOR, "#voice select")).select_by_value("preset:english_call")
    wait_js(browser, "document.querySelector('#voice').innerText.includes('the worker default is used')", 10)
    browser.execute_script(SPY_ON_SOCKETS)
    start_duplex(browser)
    wait_js(browser, "omnikube.session.state === 'active'", 20)
    prepare = json.loads(browser.execute_script("return window.sentFrames.find(f => JSON.parse(f).type === 'prepare')"))
    assert prepare["system_prompt"].startswith("You are on a phone call with the user.")
    stop_duplex(browser)


def test_a_queued_second_user_sees_position_1_and_a_countdown_and_is_served_when_the_first_leaves(
    service, browser_factory, speech_wav
):
    first = live_session(browser_factory, service, speech_wav)
    second = browser_factory(fake_audio=speech_wav)

    open_page(second, service, "audio_duplex")
    start_duplex(second)
    wait_js(second, "omnikube.session.state === 'queued'", 15)
    label = wait_js(second, "!document.querySelector('.queue-panel').hidden && document.querySelector('.queue-label').textContent")
    assert label.startswith("Queue 1/1, ~"), label
    remaining = int(second.execute_script("return document.querySelector('.queue-panel').dataset.remaining"))
    assert remaining > 0
    # The countdown runs by itself between server updates.
    wait_js(second, f"Number(document.querySelector('.queue-panel').dataset.remaining) < {remaining}", 5)
    screenshot(second, "audio_duplex-queued")

    first.find_element(By.ID, "stop").click()
    wait_js(second, "omnikube.session.state === 'active'", 30, "(second user served)")
    assert second.execute_script("return document.querySelector('.queue-panel').hidden") is True
    stop_duplex(second)


def test_a_queued_chat_shows_its_place_and_leaving_the_queue_frees_it(service, browser_factory, speech_wav):
    holder = live_session(browser_factory, service, speech_wav)

    chat = browser_factory()
    open_page(chat, service, "turnbased")
    wait_js(chat, "window.omnikube && document.querySelector('#voice select').options.length > 0")
    chat.find_element(By.ID, "input").send_keys("Are you free?")
    chat.find_element(By.ID, "send").click()
    label = wait_js(chat, "!document.querySelector('.queue-panel').hidden && document.querySelector('.queue-label').textContent", 15)
    wait_js(chat, "document.querySelector('.queue-label').textContent.startsWith('Queue 1/1')", 10)
    assert service.get("/api/queue").json()["queue_length"] == 1, label
    screenshot(chat, "turnbased-queued")

    chat.find_element(By.CSS_SELECTOR, ".queue-panel .leave-queue").click()
    wait_until(lambda: service.get("/api/queue").json()["queue_length"] == 0, 10, "the ticket to leave the queue")
    wait_js(chat, "document.querySelector('.queue-panel').hidden")
    # The unsent message is handed back for later.
    assert chat.find_element(By.ID, "input").get_attribute("value") == "Are you free?"
    assert chat.find_elements(By.CSS_SELECTOR, ".msg") == []
    stop_duplex(holder)


def test_the_admin_page_lists_workers_the_queue_and_edits_eta_settings(service, browser_factory, speech_wav):
    holder = live_session(browser_factory, service, speech_wav)
    waiter = browser_factory(fake_audio=speech_wav)
    open_page(waiter, service, "omni")
    start_duplex(waiter)
    wait_js(waiter, "omnikube.session.state === 'queued'", 15)

    admin = browser_factory()
    open_page(admin, service, "admin")
    wait_js(admin, "document.querySelector('#workers tbody tr[data-worker]')?.dataset.state === 'duplex_active'", 10)
    row = text_of(admin, "#workers tbody tr[data-worker]")
    assert "worker_0" in row and "duplex_active" in row and "audio_duplex" in row
    assert re.search(r"\b\d+s\b", row.split("audio_duplex", 1)[1]), f"no task duration in {row!r}"
    session_id = holder.execute_script("return omnikube.session.id")
    assert session_id in row
    wait_js(admin, "document.querySelector('#queue tbody tr[data-ticket]')?.dataset.position === '1'", 10)
    queue_row = text_of(admin, "#queue tbody tr[data-ticket]")
    assert "omni_duplex" in queue_row and "~" in queue_row
    assert text_of(admin, "[data-tile='queue'] b") == "1"

    # ETA settings: the form shows the server's values, and saving changes them on the server.
    wait_js(admin, "document.querySelector('#eta-form [name=eta_chat_s]').value !== ''")
    shown = float(admin.find_element(By.CSS_SELECTOR, "#eta-form [name=eta_chat_s]").get_attribute("value"))
    assert shown == service.get("/api/config/eta").json()["config"]["eta_chat_s"]
    field = admin.find_element(By.CSS_SELECTOR, "#eta-form [name=eta_omni_duplex_s]")
    field.clear()
    field.send_keys("42")
    admin.find_element(By.CSS_SELECTOR, "#eta-form button[type=submit]").click()
    wait_js(admin, "document.querySelector('#eta-status').textContent.startsWith('Saved')", 10)
    assert service.get("/api/config/eta").json()["config"]["eta_omni_duplex_s"] == 42
    screenshot(admin, "admin")

    waiter.find_element(By.ID, "stop").click()
    holder.find_element(By.ID, "stop").click()
    wait_until(lambda: worker_states(service) == ["idle"], 15, "the worker to be released")


@pytest.fixture
def chat_recording(data_dir) -> str:
    """A finished chat recording in the gateway's data dir, in the layout workers write (data.md §1)."""
    session_id = "chat_webui1"
    folder = data_dir / "sessions" / session_id
    write_wav(folder / "user_audio" / "000.wav", tone(1.0, 16_000), 16_000)
    write_wav(folder / "ai_audio" / "turn_0.wav", tone(2.0, 24_000), 24_000)
    meta = {"session_id": session_id, "app_type": "chat", "created_at": "2026-03-01T06:22:33.123456+00:00",
            "ended_at": "2026-03-01T06:22:41.001234+00:00", "duration_s": 7.9, "worker_id": 0,
            "title": "Chat 03-01 06:22", "config": {"system_prompt": "You are helpful."}}
    recording = {"session_id": session_id, "mode": "chat", "worker_id": 0, "start_ts": meta["created_at"],
                 "config": meta["config"], "turns": [{
                     "turn_index": 0, "request_ts_ms": 0.0,
                     "input": {"text": "Please remember this.", "audio": "user_audio/000.wav"},
                     "output": {"text": "[simulated] I will.", "audio": "ai_audio/turn_0.wav", "audio_duration_ms": 2000},
                     "timing": {"elapsed_ms": 812.0, "tokens": 5}}]}
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "recording.json").write_text(json.dumps(recording))
    yield session_id
    shutil.rmtree(folder, ignore_errors=True)


def test_a_recorded_session_plays_back_in_the_session_viewer(service, browser, chat_recording):
    open_page(browser, service, f"s/{chat_recording}")
    wait_js(browser, "document.querySelectorAll('#content .msg').length === 2", 15)
    assert "Please remember this." in browser.find_element(By.ID, "content").text
    assert "Chat 03-01 06:22" in browser.find_element(By.ID, "title").text
    info = browser.find_element(By.ID, "info").text
    assert "Duration: 7.9s" in info and "null" not in info and "Comment" not in info
    sources = browser.execute_script("return [...document.querySelectorAll('#content audio')].map(a => a.src)")
    assert len(sources) == 2 and all(httpx.get(src, timeout=10).status_code == 200 for src in sources)
    # The element really decodes and plays the recording.
    browser.execute_script("document.querySelector('#content .msg.assistant audio').play()")
    wait_js(browser, "document.querySelector('#content .msg.assistant audio').currentTime > 0.2", 10)
    screenshot(browser, "session-viewer")


def test_with_api_keys_on_the_session_viewer_plays_and_downloads_with_the_pages_key(
        sim_worker, browser_factory, data_dir, chat_recording, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("viewer-key-1\n")
    gateway = launch_gateway(tmp_path, [sim_worker], args=["--data-dir", str(data_dir), "--api-keys-file", str(keys)])
    try:
        browser = browser_factory()
        browser.get(f"{gateway.url}/s/{chat_recording}?api_key=viewer-key-1")
        wait_js(browser, "document.querySelectorAll('#content .msg').length === 2", 15)
        links = browser.execute_script("return [...document.querySelectorAll('#content audio')].map(a => a.src)"
                                       ".concat([...document.querySelectorAll('#info a')].map(a => a.href))")
        assert len(links) == 3 and all(httpx.get(link, timeout=10).status_code == 200 for link in links)
        bare = links[0].split("?")[0]
        assert httpx.get(bare, timeout=10).status_code == 401  # the media really needed the key
        browser.execute_script("document.querySelector('#content .msg.assistant audio').play()")
        wait_js(browser, "document.querySelector('#content .msg.assistant audio').currentTime > 0.2", 10)
    finally:
        gateway.kill()


def test_the_admin_page_plays_back_a_recent_session(service, browser, chat_recording):
    open_page(browser, service, "admin")
    wait_js(browser, "window.omnikube")
    browser.find_element(By.ID, "session-lookup").send_keys(chat_recording)
    browser.find_element(By.ID, "session-open").click()
    wait_js(browser, "document.querySelectorAll('#playback audio').length === 2", 10)
    assert "[simulated] I will." in browser.find_element(By.ID, "playback").text
    browser.execute_script("document.querySelector('#playback .msg.assistant audio').play()")
    wait_js(browser, "document.querySelector('#playback .msg.assistant audio').currentTime > 0.2", 10)
    screenshot(browser, "admin-playback")


def test_the_admin_page_in_chinese_shows_chinese_labels_and_leaves_worker_names_and_session_ids_alone(
        service, browser, chat_recording):
    open_page(browser, service, "admin?lang=zh")
    wait_js(browser, "document.querySelector('#workers tbody tr[data-worker]') !== null", 10)
    headers = browser.execute_script("return [...document.querySelectorAll('#workers th')].map(th => th.textContent)")
    assert headers == ["工作进程", "地址", "状态", "会话", "任务", "时长", "请求数"]
    assert "预计等待时间设置" in [h.text for h in browser.find_elements(By.CSS_SELECTOR, "main h2")]
    wait_js(browser, "document.querySelector(\"[data-tile='idle']\")?.firstChild.textContent === '空闲'", 10)
    row = text_of(browser, "#workers tbody tr[data-worker]")
    assert row.split()[:1] == ["worker_0"] and "idle" in row  # the worker's name and state, as it reports them
    assert browser.find_element(By.ID, "refreshed").text.startswith("更新于 ")

    browser.find_element(By.ID, "session-lookup").send_keys(chat_recording)
    browser.find_element(By.ID, "session-open").click()
    wait_js(browser, "document.querySelectorAll('#playback audio').length === 2", 10)
    assert browser.find_element(By.CSS_SELECTOR, "#playback h2").text == f"录音 {chat_recording}"
    assert "Please remember this." in browser.find_element(By.ID, "playback").text  # what the user said
    screenshot(browser, "admin_zh")


def test_the_session_viewer_in_chinese_translates_its_labels_but_not_the_sessions_title_or_id(service, browser, chat_recording):
    open_page(browser, service, f"s/{chat_recording}?lang=zh")
    wait_js(browser, "document.querySelectorAll('#content .msg').length === 2", 15)
    wait_js(browser, "document.querySelector('#info').innerText.includes('时长：7.9s')", 10)
    info = browser.find_element(By.ID, "info").text
    assert f"ID：{chat_recording}" in info and "⬇ 下载" in info and "配置" in info
    assert browser.find_element(By.ID, "title").text == "Chat 03-01 06:22"
    assert browser.title == "Chat 03-01 06:22 — 会话回放"
    assert browser.find_element(By.ID, "lang").text == "EN"  # the viewer has the switch too
    browser.find_element(By.ID, "lang").click()
    wait_js(browser, "document.querySelector('#info').innerText.includes('Duration: 7.9s')", 10)


def test_a_live_chat_and_a_duplex_session_are_replayed_from_the_workers_recordings(service, browser_factory, speech_wav):
    chat = browser_factory()
    open_page(chat, service, "turnbased")
    wait_js(chat, "window.omnikube && document.querySelector('#voice select').options.length > 0")
    chat.find_element(By.ID, "opt-voice").click()
    chat.find_element(By.ID, "input").send_keys("Record me")
    chat.find_element(By.ID, "send").click()
    wait_js(chat, "document.querySelector('.msg.assistant')?.dataset.state === 'done'", 30)
    chat_link = chat.find_element(By.CSS_SELECTOR, ".msg.assistant .meta a").get_attribute("href")
    chat_id = chat_link.rsplit("/", 1)[-1]

    # Share with a comment: the comment is stored with the recording, the link is handed out.
    chat.find_element(By.CSS_SELECTOR, "#share button.share").click()
    chat.find_element(By.CSS_SELECTOR, "#share dialog textarea").send_keys("A fine answer.")
    chat.find_element(By.CSS_SELECTOR, "#share dialog button.primary").click()
    wait_js(chat, "document.querySelector('#share dialog [role=status]').innerText.includes('/s/')", 10)
    assert service.get(f"/api/sessions/{chat_id}/comment").json()["comment"] == "A fine answer."

    duplex = live_session(browser_factory, service, speech_wav)
    wait_js(duplex, "omnikube.player.schedule.chunks >= 1", 30)
    duplex_id = duplex.execute_script("return omnikube.session.recordingId")
    stop_duplex(duplex)

    for session_id in (chat_id, duplex_id):
        wait_until(lambda: service.get(f"/api/sessions/{session_id}/recording").status_code == 200, 30,
                   f"the worker to finalise {session_id}")
    chat.get(chat_link)
    wait_js(chat, "document.querySelectorAll('#content .msg').length === 2", 15)
    assert "Record me" in chat.find_element(By.ID, "content").text
    assert "Comment: A fine answer." in chat.find_element(By.ID, "info").text
    src = chat.execute_script("return document.querySelector('#content .msg.assistant audio')?.src")
    assert src and httpx.get(src, timeout=10).status_code == 200

    open_page(chat, service, f"s/{duplex_id}")
    wait_js(chat, "document.querySelectorAll('#content tbody tr').length >= 3", 15)
    assert "SPEAK" in chat.find_element(By.ID, "content").text
    screenshot(chat, "session-viewer-duplex")
