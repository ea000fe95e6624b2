"""xttsft serve with real parts: `xttsft serve` in a subprocess (real uvicorn on 127.0.0.1, the
tiny random XTTS of a run made by make_run), the real `openai` client, PyAV and soundfile to
decode. The concurrency tests use an in-process server whose engine drives a double that tags its
chunks and raises if entered twice.

Cost control (2-core CI): a random GPT almost never emits STOP, so a sentence is nearly always
SYNTH_MAX_AUDIO_TOKENS=8 codes; requests ask for speed 4, which shortens the latents 4x before the
HiFi-GAN decoder (the expensive part of the tiny model); one server per module, and a second one
only for the restart tests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from synth_helpers import make_dataset, make_run
from xttsft.paths import Workspace

openai = pytest.importorskip("openai")
httpx2 = pytest.importorskip("httpx2")

KEY = "test-key-0123456789"
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
FAST = {"speed": 4.0}  # the tiny model's cost is its decoder: speed 4 gives it a quarter of the latents
SERVER_ENV = {
    "SERVE_API_KEY": KEY,
    "SERVE_MAX_STREAMS": "2",
    "SERVE_MAX_QUEUE": "1",
    "SERVE_STREAM_CHUNK_SIZE": "0",  # one decode per sentence (the restarted server streams within sentences)
    "SYNTH_MAX_AUDIO_TOKENS": "8",
    "SYNTH_NUM_REFERENCES": "1",
    "SYNTH_SENTENCE_PAUSE": "0.05",
    "SYNTH_DEVICE": "cpu",
}


@pytest.fixture(autouse=True)
def _no_serve_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SERVE_"):
            monkeypatch.delenv(key, raising=False)


# --------------------------------------------------------------------------- decoding
def decode_audio(content: bytes, fmt: str) -> tuple[int, np.ndarray]:
    """(sample rate, samples) of a response, read by a decoder that is not ours."""
    if fmt == "pcm":
        assert len(content) % 2 == 0
        return 24000, np.frombuffer(content, dtype="<i2").astype(np.float32) / 32768.0
    if fmt == "opus":  # FFmpeg decodes Opus at 48 kHz whatever the input; libsndfile honours OpusHead's rate
        import soundfile as sf

        data, rate = sf.read(io.BytesIO(content), dtype="float32")
        return rate, data.reshape(-1)
    import av

    with av.open(io.BytesIO(content)) as container:
        stream = container.streams.audio[0]
        frames = list(container.decode(stream))
    assert frames, f"{fmt}: nothing decoded"
    assert {f.sample_rate for f in frames} == {24000}
    return frames[0].sample_rate, np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


def decode(content: bytes, fmt: str) -> tuple[int, int]:
    """(sample rate, number of samples) of a response."""
    rate, samples = decode_audio(content, fmt)
    return rate, len(samples)


def metric(text: str, name: str) -> float:
    """One sample of the Prometheus text format (``name`` with its labels, as printed)."""
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


# --------------------------------------------------------------------------- the live server
@dataclass
class Live:
    url: str
    proc: subprocess.Popen
    log: Path
    early: list[int] = field(default_factory=list)  # statuses the request sent before ready went through
    early_audio: bytes = b""

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", KEY), **kw)

    def metrics(self) -> str:
        r = httpx2.get(self.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200
        return r.text


def _start(ws: Workspace, voices: Path, log: Path, extra_env: dict[str, str] | None = None) -> Live:
    from xttsft.voice.serve.background import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVE_", "SYNTH_"))}
    env.update(SERVER_ENV, **(extra_env or {}))
    cmd = [
        sys.executable,
        "-m",
        "xttsft",
        "--workdir",
        str(ws.root),
        "serve",
        "--model",
        "run1",
        "--voices",
        str(voices),
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    live = Live(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + 120
    while True:  # uvicorn answers /healthz at once; the model loads behind it
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the server did not start listening"
        try:
            if httpx2.get(live.url + "/healthz").status_code == 200:
                return live
        except httpx2.TransportError:
            time.sleep(0.1)


def _speak_before_ready(live: Live) -> None:
    """A request sent while the model loads, through the client's own retries (Retry-After). Six retries, not
    the client's default two: a loaded CI machine once took longer to start than the server's estimate from
    its last start (the answers were 503, 503, 503)."""
    hook = {"response": [lambda r: live.early.append(r.status_code)]}
    with httpx2.Client(event_hooks=hook, timeout=120) as http:
        client = live.client(http_client=http, max_retries=6)
        live.early_audio = client.audio.speech.create(
            model="tts-1", voice="alloy", input="Hello.", response_format="pcm", **FAST
        ).content


def _wait_ready(live: Live, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while httpx2.get(live.url + "/readyz").status_code != 200:
        assert live.proc.poll() is None, live.log.read_text()
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.2)


def _stop(live: Live) -> None:
    live.proc.send_signal(signal.SIGINT)
    try:
        live.proc.wait(30)
    except subprocess.TimeoutExpired:
        live.proc.kill()
        live.proc.wait()


@pytest.fixture(scope="module")
def voice_ws(tmp_path_factory: pytest.TempPathFactory, speak) -> tuple[Workspace, Path]:
    """A workspace with a tiny LoRA run (its dataset gives the default voice) and a voices folder:
    ana.wav (no language) and bruno/ (voice.json: pt)."""
    root = tmp_path_factory.mktemp("serve")
    ws = Workspace(root / "ws")
    make_dataset(ws)
    make_run(ws)
    voices = root / "voices"
    speak("Ana speaks clearly in this reference recording of a few seconds.", voices / "ana.wav")
    speak("Bruno fala com calma nesta gravacao de referencia.", voices / "bruno" / "take1.wav", voice="pt-br")
    (voices / "bruno" / "voice.json").write_text(json.dumps({"language": "pt-BR", "description": "Bruno, calm"}))
    return ws, voices


@pytest.fixture(scope="module")
def live(voice_ws: tuple[Workspace, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    ws, voices = voice_ws
    server = _start(ws, voices, tmp_path_factory.mktemp("logs") / "serve.log")
    try:
        _wait_ready(server)
        yield server
    finally:
        _stop(server)


# --------------------------------------------------------------------------- the client's calls
def _spoken(content: bytes, fmt: str) -> tuple[int, int, bool]:
    """(rate, samples, whether it holds speech) of an answer, which must decode in any case. The random tiny
    GPT now and then stops at its first code (seen once in CI): that answer is 0.1 s of silence (pcm: nothing),
    still a file of its format, and the test asks again (at most 3 times) for one with speech to count."""
    rate, samples = decode_audio(content, fmt)
    return rate, len(samples), bool(np.abs(samples).max(initial=0.0) > 1e-3)


def test_all_six_formats_sync_and_async_decode_at_24_khz(live: Live) -> None:
    client = live.client()
    for fmt in FORMATS:
        for _ in range(3):  # a random model's silent answer is asked again; every answer is asserted to decode
            audio = client.audio.speech.create(
                model="tts-1", voice="alloy", input="Hello there.", response_format=fmt, **FAST
            )
            rate, n, spoken = _spoken(audio.content, fmt)
            if spoken:
                break
        assert rate == 24000 and n >= 1000, (fmt, rate, n)
    wav = client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", response_format="wav", **FAST).content
    assert wav[:4] == b"RIFF" and wav[4:8] == b"\xff\xff\xff\xff" and wav[40:44] == b"\xff\xff\xff\xff"

    async def run() -> list[tuple[str, int, int]]:
        aclient = openai.AsyncOpenAI(base_url=live.url + "/v1", api_key=KEY)
        out = []
        for fmt in FORMATS:
            for _ in range(3):
                audio = await aclient.audio.speech.create(
                    model="gpt-4o-mini-tts",
                    voice="nova",
                    input="Good morning.",
                    response_format=fmt,
                    instructions="cheerful",
                    **FAST,
                )
                rate, n, spoken = _spoken(audio.content, fmt)
                if spoken:
                    break
            out.append((fmt, rate, n))
        await aclient.close()
        return out

    for fmt, rate, n in asyncio.run(run()):
        assert rate == 24000 and n >= 1000, (fmt, rate, n)


def test_streaming_response_receives_audio_before_the_engine_has_finished(live: Live) -> None:
    client = live.client()
    text = "First sentence here. Second sentence here. Third sentence here. Fourth one."
    got: list[bytes] = []
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text, response_format="pcm", **FAST
    ) as response:
        assert response.headers["content-type"].startswith("audio/pcm")
        for chunk in response.iter_bytes():
            if not got:
                during = live.metrics()  # the first sentence is here; three are still to be spoken
            got.append(chunk)
    assert metric(during, "xttsft_active_streams") == 1
    assert len(got) >= 4, "one chunk per sentence at least"
    assert metric(live.metrics(), "xttsft_active_streams") == 0


def test_sse_deltas_decode_to_audio(live: Live) -> None:
    raw = live.client().audio.speech.create(
        model="tts-1", voice="alloy", input="One. Two.", response_format="mp3", stream_format="sse", **FAST
    )
    events = [json.loads(line[6:]) for line in raw.content.decode().splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["input_tokens"] == len("One. Two.")
    deltas = [e for e in events[:-1] if e["type"] == "speech.audio.delta"]
    assert len(deltas) == len(events) - 1 >= 2
    rate, n = decode(b"".join(base64.b64decode(e["audio"]) for e in deltas), "mp3")
    assert rate == 24000 and n > 2000


def test_models_voices_and_voice_as_an_object(live: Live) -> None:
    client = live.client()
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "xttsft-run1" and {"tts-1", "tts-1-hd", "gpt-4o-mini-tts"} <= set(ids)
    headers = {"Authorization": f"Bearer {KEY}"}
    voices = httpx2.get(live.url + "/v1/audio/voices", headers=headers).json()
    assert [v["id"] for v in voices["voices"]] == ["run1", "ana", "bruno"] and voices["default"] == "run1"
    assert voices["voices"][2]["language"] == "pt" and voices["aliases"]["alloy"] == "run1"
    assert httpx2.get(live.url + "/v1/audio/models", headers=headers).json()["models"][0]["id"] == "xttsft-run1"
    audio = client.audio.speech.create(
        model="tts-1", voice={"id": "bruno"}, input="Bom dia, tudo bem?", response_format="wav", **FAST
    )
    assert decode(audio.content, "wav")[0] == 24000


def test_errors_come_back_in_openai_shape_through_the_client(live: Live) -> None:
    client = live.client(max_retries=0)
    for voice in ("nobody", "../../etc/passwd", "/tmp/x.wav"):
        with pytest.raises(openai.BadRequestError) as err:
            client.audio.speech.create(model="tts-1", voice=voice, input="Hi.")
        assert err.value.param == "voice" and "does not exist" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(model="tts-1", voice="alloy", input="a" * 4097)
    assert err.value.param == "input" and "4096" in err.value.message
    for bad, param in (
        (dict(speed=5.0), "speed"),
        (dict(response_format="ogg"), "response_format"),
        (dict(extra_body={"language": "xx"}), "language"),
    ):
        with pytest.raises(openai.BadRequestError) as err:
            client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", **bad)
        assert err.value.param == param
    with pytest.raises(openai.AuthenticationError) as auth:
        live.client(api_key="wrong", max_retries=0).audio.speech.create(model="tts-1", voice="alloy", input="Hi.")
    assert auth.value.code == "invalid_api_key"
    assert httpx2.get(live.url + "/metrics").status_code == 401
    big = httpx2.post(
        live.url + "/v1/audio/speech",
        headers={"Authorization": f"Bearer {KEY}"},
        content=b'{"input": "' + b"a" * 70000 + b'"}',
    )
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"


def test_a_full_queue_raises_rate_limit_error_and_a_queued_client_that_leaves_never_starts(live: Live) -> None:
    before = live.metrics()
    long_text = " ".join(f"Sentence number {i} is here." for i in range(12))
    body = {"model": "tts-1", "voice": "alloy", "input": long_text, "response_format": "pcm"}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx2.Client(timeout=60) as http, contextlib.ExitStack() as stack:
        for _ in range(3):  # two streams speaking, one waiting: serve.max_streams 2 + max_queue 1
            response = stack.enter_context(
                http.stream("POST", live.url + "/v1/audio/speech", json=body, headers=headers)
            )
            assert response.status_code == 200
        with pytest.raises(openai.RateLimitError) as err:
            live.client(max_retries=0).audio.speech.create(model="tts-1", voice="alloy", input="Hi.")
        assert int(err.value.response.headers["retry-after"]) >= 1
        assert err.value.code == "queue_full"
    m = _idle(live)  # the three clients left: the engine drops their work
    queued = 'xttsft_cancellations_total{stage="queued"}'
    speaking = 'xttsft_cancellations_total{stage="speaking"}'
    dropped = metric(m, queued) - metric(before, queued)  # left before their first turn: never started
    assert dropped >= 1 and dropped + metric(m, speaking) - metric(before, speaking) == 3


def _idle(live: Live, timeout: float = 30) -> str:
    """/metrics once no request is waiting or being spoken."""
    deadline = time.monotonic() + timeout
    while (m := live.metrics()) and metric(m, "xttsft_active_streams") + metric(m, "xttsft_queue_depth") > 0:
        assert time.monotonic() < deadline, "the engine did not go idle"
        time.sleep(0.05)
    return m


def test_latents_come_from_memory_until_the_wav_changes(live: Live, voice_ws: tuple[Workspace, Path], speak) -> None:
    client = live.client()
    computed = 'xttsft_latent_cache_lookups_total{source="computed"}'
    memory = 'xttsft_latent_cache_lookups_total{source="memory"}'
    before = live.metrics()
    for _ in range(2):
        client.audio.speech.create(model="tts-1", voice="ana", input="Hi.", response_format="pcm", **FAST)
    after = live.metrics()
    assert metric(after, computed) == metric(before, computed)
    assert metric(after, memory) - metric(before, memory) == 2
    _ws, voices = voice_ws
    speak("A different recording of Ana, longer than the first one was.", voices / "ana.wav")
    client.audio.speech.create(model="tts-1", voice="ana", input="Hi.", response_format="pcm", **FAST)
    assert metric(live.metrics(), computed) == metric(after, computed) + 1


def test_soak_200_requests_memory_returns_to_its_level_after_warm_up(live: Live) -> None:
    """200 requests (sequential, all formats, some abandoned mid-stream) in bounded time; the
    server's RSS ends within 64 MB of its level after a warm-up of 20 requests."""
    import psutil

    proc = psutil.Process(live.proc.pid)
    client = live.client()
    before = _idle(live)

    def one(i: int) -> None:
        fmt = FORMATS[i % len(FORMATS)]
        if i % 10 == 9:  # a client that leaves after the first chunk
            with client.audio.speech.with_streaming_response.create(
                model="tts-1",
                voice=("alloy", "ana", "bruno")[i % 3],
                input="One. Two. Three.",
                response_format=fmt,
                **FAST,
            ) as response:
                next(response.iter_bytes())
            return
        audio = client.audio.speech.create(
            model="tts-1", voice=("alloy", "ana", "bruno")[i % 3], input=f"Number {i}.", response_format=fmt, **FAST
        )
        assert len(audio.content) > 100

    for i in range(20):
        one(i)
    warm = proc.memory_info().rss
    t0 = time.monotonic()
    for i in range(200):
        one(i)
    elapsed = time.monotonic() - t0
    end = proc.memory_info().rss
    m = _idle(live)
    print(f"soak: 200 requests in {elapsed:.1f} s; RSS {warm / 2**20:.0f} -> {end / 2**20:.0f} MB")
    assert elapsed < 600
    assert end - warm < 64 * 2**20, f"RSS grew by {(end - warm) / 2**20:.0f} MB over 200 requests"
    ok = 'xttsft_requests_total{outcome="ok"}'
    left = 'xttsft_requests_total{outcome="cancelled"}'
    assert metric(m, ok) - metric(before, ok) == 198 and metric(m, left) - metric(before, left) == 22


# --------------------------------------------------------------------------- a restart
@pytest.fixture(scope="module")
def restarted(live: Live, voice_ws: tuple[Workspace, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The same workspace served again (streaming within sentences this time); a request is sent
    the moment it listens, long before it is ready."""
    ws, voices = voice_ws
    extra = {"SERVE_STREAM_CHUNK_SIZE": "4", "SERVE_ALIASES": "echo=ana,narrator=bruno"}
    server = _start(ws, voices, tmp_path_factory.mktemp("logs2") / "serve.log", extra)
    try:
        early = threading.Thread(target=_speak_before_ready, args=(server,))
        early.start()
        early.join(300)
        _wait_ready(server)
        yield server
    finally:
        _stop(server)


def test_a_request_sent_before_ready_succeeds_after_the_clients_own_retry(restarted: Live) -> None:
    assert restarted.early[0] == 503 and restarted.early[-1] == 200, restarted.early
    assert decode(restarted.early_audio, "pcm")[1] > 0


def test_latents_survive_a_restart(restarted: Live) -> None:
    m = restarted.metrics()
    assert metric(m, 'xttsft_latent_cache_lookups_total{source="computed"}') == 0
    assert metric(m, 'xttsft_latent_cache_lookups_total{source="disk"}') == 3  # run1, ana (changed), bruno


def test_aliases_name_voices_and_openai_names_fall_back_to_the_default(restarted: Live) -> None:
    voices = httpx2.get(restarted.url + "/v1/audio/voices", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert voices["aliases"]["echo"] == "ana" and voices["aliases"]["narrator"] == "bruno"
    assert voices["aliases"]["alloy"] == voices["aliases"]["nova"] == "run1"
    m = restarted.metrics()
    restarted.client().audio.speech.create(model="tts-1", voice="narrator", input="Oi.", response_format="pcm", **FAST)
    assert (
        metric(restarted.metrics(), 'xttsft_requests_total{outcome="ok"}')
        == metric(m, 'xttsft_requests_total{outcome="ok"}') + 1
    )


def test_xtts_streams_chunks_within_a_sentence(restarted: Live) -> None:
    tries = []
    for _ in range(4):  # the random tiny GPT now and then stops within its first 4 codes: one chunk is right then
        with restarted.client().audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input="Hello there.", response_format="pcm"
        ) as response:
            tries.append([len(c) for c in response.iter_bytes()])
        if len(tries[-1]) >= 2:
            break
    assert len(tries[-1]) >= 2, tries  # up to 8 audio codes in chunks of 4: more than one chunk for one sentence


# --------------------------------------------------------------------------- concurrency (engine double)
def tag_value(tag: int) -> int:
    """The int16 sample every chunk of request ``tag`` carries."""
    from xttsft.voice.serve.encode import to_s16

    return int(to_s16(np.array([tag / 100.0]))[0])


class TaggingDouble:
    """An engine double: every sample of a piece's chunks is its request's tag (``tagN`` in the
    text), and a second entry while one piece is being spoken raises. It never looks at ``cancel``:
    stopping is the engine's job."""

    sample_rate = 24000

    def __init__(self) -> None:
        self.chunks, self.delay = 3, 0.002
        self.lock = threading.Lock()
        self.inside = 0
        self.threads: set[int] = set()
        self.log: list[int] = []  # the tag of every piece, in the order the engine spoke them
        self.after_cancel: dict[int, int] = {}  # tag -> chunks made after its cancel was set
        self.made: dict[int, int] = {}  # tag -> chunks made

    def split(self, text: str, language: str) -> list[str]:
        return [p.strip() for p in text.split(".") if p.strip()]

    def latents(self, voice):
        from xttsft.voice.serve.voices import Latents

        return Latents(voice.name, "memory")

    def stream(self, text, language, latents, speed, cancel):
        with self.lock:
            self.inside += 1
            if self.inside > 1:
                self.inside -= 1
                raise RuntimeError("entered twice: two requests in the model at once")
        try:
            self.threads.add(threading.get_ident())
            m = re.search(r"tag(\d+)", text)
            tag = int(m.group(1)) if m else 0
            self.log.append(tag)
            for _ in range(self.chunks):
                time.sleep(self.delay)
                self.made[tag] = self.made.get(tag, 0) + 1
                if cancel.is_set():
                    self.after_cancel[tag] = self.after_cancel.get(tag, 0) + 1
                yield np.full(240, tag / 100.0, dtype=np.float32)
        finally:
            with self.lock:
                self.inside -= 1


@pytest.fixture(scope="module")
def double_server() -> Iterator[tuple[str, TaggingDouble]]:
    from xttsft.settings import ServeSettings
    from xttsft.voice.serve.api import create_app
    from xttsft.voice.serve.background import BackgroundServer
    from xttsft.voice.serve.speaker import Loaded
    from xttsft.voice.serve.voices import VoiceCatalog, VoiceEntry

    double = TaggingDouble()
    loaded = Loaded(double, VoiceCatalog([VoiceEntry("tagger")], default="tagger"), "double", "engine double", "en")
    app = create_app(ServeSettings(max_streams=8, max_queue=8), lambda: loaded, sentence_pause=0.0)
    with BackgroundServer(app) as srv:
        while httpx2.get(srv.url + "/readyz").status_code != 200:
            time.sleep(0.01)
        yield srv.url, double


def test_eight_parallel_streams_never_share_the_engine_or_a_chunk(double_server) -> None:
    url, double = double_server
    double.chunks, double.delay, double.log[:] = 3, 0.002, []
    double.threads.clear()  # the warm-up ran on the loader thread, before it handed the model over
    client = openai.OpenAI(base_url=url + "/v1", api_key="none")
    texts = {tag: ". ".join([f"tag{tag} s{j}" for j in range(12 if tag == 1 else 3)]) for tag in range(1, 9)}
    got: dict[int, bytes] = {}

    def run(tag: int) -> None:
        got[tag] = client.audio.speech.create(
            model="tts-1", voice="alloy", input=texts[tag], response_format="pcm"
        ).content

    threads = [threading.Thread(target=run, args=(tag,)) for tag in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for tag, content in got.items():
        samples = np.frombuffer(content, dtype="<i2")
        assert len(samples) == len(double.split(texts[tag], "en")) * double.chunks * 240
        assert set(samples.tolist()) == {tag_value(tag)}, f"stream {tag} holds another stream's audio"
    assert len(got) == 8 and len(double.threads) == 1  # one thread: the engine's
    first, last = double.log.index(1), len(double.log) - 1 - double.log[::-1].index(1)
    assert set(double.log[first:last]) == set(range(1, 9)), "the long request held the others back"
    assert double.log[-1] == 1  # the short ones finished first


def test_a_client_that_leaves_stops_its_generation_within_one_chunk(double_server) -> None:
    url, double = double_server
    double.chunks, double.delay = 200, 0.01  # 2 s per piece if nobody stops it
    client = openai.OpenAI(base_url=url + "/v1", api_key="none")

    def first_audio(tag: int) -> float:
        t0 = time.perf_counter()
        with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=f"tag{tag} x", response_format="pcm"
        ) as response:
            next(response.iter_bytes())
            return time.perf_counter() - t0  # and leave

    baseline = min(first_audio(20) for _ in range(2))
    first_audio(21)
    after = first_audio(22)
    time.sleep(0.2)
    assert double.after_cancel.get(21, 0) <= 1 and double.made[21] < 100, double.made
    assert after < baseline + 0.5, (baseline, after)


@pytest.mark.parametrize("backend", ["pyav", "ffmpeg"])
def test_an_encoder_that_got_no_or_little_audio_still_closes_a_file_that_decodes(backend: str) -> None:
    """A sentence whose GPT stops at its first code gives no sample, or a few hundred: the answer is still a file
    of its format, padded with silence to 0.1 s (an mp3 or aac of no frame used to be empty, and a 2-frame ADTS
    stream is not recognised by FFmpeg's probe); pcm is never padded."""
    from xttsft.voice.serve.encode import MIN_SAMPLES, open_encoder

    if backend == "ffmpeg" and shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    for length in (0, 5, 300):
        for fmt in FORMATS:
            encoder = open_encoder(fmt, backend=backend)
            content = encoder.encode(np.full(length, 0.1, dtype=np.float32)) + encoder.close()
            rate, n = decode(content, fmt)
            assert rate == 24000, (fmt, length, rate)
            assert (n == length) if fmt == "pcm" else (n >= MIN_SAMPLES), (fmt, length, n)


def test_an_answer_with_no_audio_is_a_file_of_its_format_through_the_client(double_server) -> None:
    url, double = double_server
    double.chunks = 0  # the engine speaks the request and gets no sample
    client = openai.OpenAI(base_url=url + "/v1", api_key="none")
    try:
        for fmt in FORMATS:
            content = client.audio.speech.create(model="tts-1", voice="alloy", input="tag30 x", response_format=fmt)
            rate, n = decode(content.content, fmt)
            assert rate == 24000 and (n == 0 if fmt == "pcm" else n > 0), (fmt, rate, n)
        events = client.audio.speech.create(
            model="tts-1", voice="alloy", input="tag31 x", response_format="mp3", stream_format="sse"
        )
        deltas = [json.loads(line[6:]) for line in events.content.decode().splitlines() if line.startswith("data: ")]
        audio = b"".join(base64.b64decode(e["audio"]) for e in deltas if e["type"] == "speech.audio.delta")
        assert deltas[-1]["type"] == "speech.audio.done" and decode(audio, "mp3")[1] > 0
    finally:
        double.chunks = 3


# --------------------------------------------------------------------------- start-up refusals
def test_a_public_host_without_a_key_is_refused_before_anything_loads(cli, voice_ws) -> None:
    ws, _voices = voice_ws
    res = cli("serve", "--host", "0.0.0.0", workdir=ws.root)
    assert res.exit_code == 1 and "no API key is set" in res.output and "SERVE_API_KEY" in res.output


def test_voice_folder_problems_are_reported_together(tmp_path: Path, speak) -> None:
    from xttsft.errors import InputError
    from xttsft.voice.serve.voices import read_voices_dir

    speak("A good clip of speech for the voice folder test.", tmp_path / "good.wav")
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    (tmp_path / "bad-json").mkdir()
    speak("Another clip of speech for the voice folder.", tmp_path / "bad-json" / "a.wav")
    (tmp_path / "bad-json" / "voice.json").write_text('{"language": "xx"}')
    with pytest.raises(InputError) as err:
        read_voices_dir(tmp_path)
    for part in ("empty: no audio files", "broken.wav", "voice.json: language 'xx' is not supported"):
        assert part in err.value.message
