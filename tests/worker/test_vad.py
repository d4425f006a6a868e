"""Silero VAD on real speech (espeak-ng sentences at known offsets in silence and noise)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from omnikube.protocol import VadConfig
from omnikube_worker.vad import SileroVad

from tests.fixtures.speech import QUESTION, RATE, SENTENCE, speech_at
from tests.fixtures.worker_app import tone

# Silero reacts within a window or two and holds on through short dips; the segment is padded by
# speech_pad_ms (30 ms by default) on both sides.
TOLERANCE_S = 0.15


def run(vad: SileroVad, track: np.ndarray, chunk: int = 8000) -> list:
    """Feed the track in the original client's 0.5 s chunks; every event, in order."""
    events = []
    for start in range(0, track.size, chunk):
        events += vad.feed(track[start:start + chunk])
    return events


def segments(events) -> list[tuple[float, float]]:
    return [(e.start / RATE, e.end / RATE) for e in events if e.kind == "segment"]


@pytest.mark.parametrize("noise_rms", [0.0, 0.01], ids=["silence", "noise"])
def test_two_sentences_become_two_segments_at_their_offsets(noise_rms):
    track, spans = speech_at(11.0, [(1.0, SENTENCE), (6.0, QUESTION)], noise_rms=noise_rms)
    found = segments(run(SileroVad(), track))
    assert len(found) == 2
    for (start, end), (voice_start, voice_end) in zip(found, spans):
        assert abs(start - (voice_start - 0.03)) < TOLERANCE_S
        assert abs(end - (voice_end + 0.03)) < TOLERANCE_S


def test_the_segment_holds_the_speech_itself():
    track, spans = speech_at(6.0, [(1.0, SENTENCE)])
    [event] = [e for e in run(SileroVad(), track) if e.kind == "segment"]
    assert np.array_equal(event.segment, track[event.start:event.end])


def test_each_onset_is_announced_before_its_segment():
    track, _ = speech_at(11.0, [(1.0, SENTENCE), (6.0, QUESTION)])
    assert [e.kind for e in run(SileroVad(), track)] == ["start", "segment", "start", "segment"]


def test_a_pause_shorter_than_min_silence_keeps_one_segment():
    track, spans = speech_at(10.0, [(1.0, SENTENCE), (4.6, QUESTION)])  # a pause of about 0.8 s
    short = segments(run(SileroVad(VadConfig(min_silence_duration_ms=1500)), track))
    long_enough = segments(run(SileroVad(VadConfig(min_silence_duration_ms=200)), track))
    assert len(short) == 1 and len(long_enough) >= 2
    assert short[0][1] > spans[1][0]


def test_speech_pad_widens_the_segment_on_both_sides():
    track, _ = speech_at(6.0, [(1.0, SENTENCE)])
    [(tight_start, tight_end)] = segments(run(SileroVad(VadConfig(speech_pad_ms=0)), track))
    [(padded_start, padded_end)] = segments(run(SileroVad(VadConfig(speech_pad_ms=200)), track))
    assert padded_start == pytest.approx(tight_start - 0.2, abs=0.001)
    assert padded_end == pytest.approx(tight_end + 0.2, abs=0.001)


def test_speech_shorter_than_min_speech_is_discarded():
    track, _ = speech_at(4.0, [(1.0, "Yes.")])
    kinds = [e.kind for e in run(SileroVad(VadConfig(min_speech_duration_ms=2000)), track)]
    assert kinds == ["start", "discard"]


def test_threshold_decides_whether_speech_in_loud_noise_counts():
    noisy, _ = speech_at(6.0, [(1.0, SENTENCE)], noise_rms=0.2)  # Silero's speech probability peaks near 0.99
    assert len(segments(run(SileroVad(VadConfig(threshold=0.5)), noisy))) >= 1
    assert run(SileroVad(VadConfig(threshold=0.999)), noisy) == []


def test_a_loud_steady_tone_and_noise_start_no_turn():
    """The energy detector this replaced took both for speech; at most the tone's click is announced."""
    hum = np.concatenate([np.zeros(RATE, np.float32), tone(3.0, 220.0, 0.5), np.zeros(RATE, np.float32)])
    noise = np.random.default_rng(1).normal(0, 0.1, 5 * RATE).astype(np.float32)
    assert segments(run(SileroVad(), hum)) == [] and run(SileroVad(), noise) == []


def test_reset_starts_from_a_clean_state():
    track, _ = speech_at(6.0, [(1.0, SENTENCE)])
    vad = SileroVad()
    first = segments(run(vad, track))
    vad.reset()
    assert segments(run(vad, track)) == first


def test_importing_the_vad_loads_no_torch():
    code = "import sys; import omnikube_worker.vad as v; v.SileroVad(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
