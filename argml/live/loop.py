"""The live loop: frames in, YOLO face tracking, asynchronous classification, per-person pooling, labels drawn.

Three jobs in three places (see argml.live): capture (argml.live.capture), classification (argml.live.workers:
a thread with its own model, or inline) and, here on the main thread, tracking, pooling and drawing.

Which faces are classified when: each tracked person at most every `live.classify_interval` seconds. The loop
keeps time by the wall clock, except inline on a file (a video or images), where it keeps the stream's own
time (frame index / frames per second): then every answer, pool and drawn label is a function of the input
alone, the same on every run and machine, which is what the demo stage needs.
"""

from __future__ import annotations

from argml.serving import inference  # first: it fixes the import order of torchvision and TensorFlow

import json  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402

from argml.core.config import LiveParams  # noqa: E402
from argml.core.errors import Unavailable  # noqa: E402
from argml.core.files import check_writable  # noqa: E402
from argml.live.capture import frame_source  # noqa: E402
from argml.live.pooling import TrackPools  # noqa: E402
from argml.live.render import Labelled, describe, draw, frame_record  # noqa: E402
from argml.live.workers import ClassifierWorker, InlineClassifier  # noqa: E402

STREAM_FPS = 15.0  # the stream clock's rate for sources that state none (images, a video without it)


@dataclass(frozen=True)
class LiveOptions:
    """One run of the live loop: what `python -m argml.live` takes on its command line."""

    source: str = "0"  # webcam index, a video file, an image or a folder of images
    model: str = inference.DEFAULT_MODEL
    detector: str | None = None  # path or URL; default $ARGML_YOLO_FACE
    detector_sha256: str = ""
    backend: str | None = None  # keras, litert or auto; default params' live.backend
    headless: bool = False
    output: str | None = None  # annotated video (.mp4)
    jsonl: str | None = None  # per-frame records
    inline: bool = False  # classify in the loop, not in a worker thread
    max_frames: int = 0  # 0 = until the source ends
    params: str = "params.yaml"  # its `live` section


@dataclass
class Recorder:
    """The run's outputs: the annotated video and the JSONL records, opened on the first frame."""

    video_path: str | None
    jsonl_path: str | None
    fps: float
    writer: cv2.VideoWriter | None = None
    size: tuple[int, int] | None = None
    records: object = None

    def write(self, frame, record: dict) -> None:
        if self.jsonl_path:
            if self.records is None:
                Path(self.jsonl_path).parent.mkdir(parents=True, exist_ok=True)
                self.records = open(self.jsonl_path, "w", buffering=1)  # line by line: others may tail it
            self.records.write(json.dumps(record) + "\n")
        if self.video_path:
            if self.writer is None:
                Path(self.video_path).parent.mkdir(parents=True, exist_ok=True)
                self.size = (frame.shape[1], frame.shape[0])
                self.writer = cv2.VideoWriter(self.video_path, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
                if not self.writer.isOpened():
                    raise Unavailable(f"cannot write the video {self.video_path} (OpenCV's mp4 writer refused it)")
            same = (frame.shape[1], frame.shape[0]) == self.size
            self.writer.write(frame if same else cv2.resize(frame, self.size))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
        if self.records is not None:
            self.records.close()


@dataclass
class Tally:
    frames: int = 0
    unreadable_frames: int = 0
    classified_faces: int = 0
    tracks: set = field(default_factory=set)


def _interrupt_on_sigterm():
    """SIGTERM ends the loop like Ctrl-C, so the video file is finished and playable. -> the old handler."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        return signal.signal(signal.SIGTERM, interrupt)
    return None


def step(frame, index: int, now: float, face_detector, engine, pools: TrackPools, settings: LiveParams,
         tally: Tally) -> list[Labelled]:
    """One frame: track faces, send the people who are due to the classifier, pool the answers that came
    back, and return everyone in view with their pooled labels."""
    faces = face_detector.track(frame)
    tracked = [face for face in faces if face.track_id is not None]
    pools.seen([face.track_id for face in tracked], index)
    due = set(pools.due([face.track_id for face in tracked], now, settings.classify_interval))
    due_faces = [face for face in tracked if face.track_id in due]
    if due_faces and engine.submit([f.track_id for f in due_faces], cv2.cvtColor(frame, cv2.COLOR_BGR2RGB),
                                   [f.box for f in due_faces]):
        pools.submitted([f.track_id for f in due_faces], now)
        tally.classified_faces += len(due_faces)
    for track_id, answer in engine.drain():
        pools.add(track_id, answer)
    people = []
    for face in faces:
        pooled, count = pools.pooled(face.track_id) if face.track_id is not None else (None, 0)
        people.append(Labelled(face.track_id, face.box, count, *describe(pooled, engine.card)))
        if face.track_id is not None:
            tally.tracks.add(face.track_id)
    return people


def run(options: LiveOptions) -> dict:
    """Run the loop; returns a summary: frames, unreadable frames, tracks, pool resets, classified faces, the
    classifier's backend, and the run's speed (seconds, fps, classification latency per face)."""
    check_writable(options.output, (".mp4",), "--output")
    check_writable(options.jsonl, (".jsonl",), "--jsonl")
    settings = inference.settings(options.params)
    face_detector = inference.open_detector(settings, options.detector, options.detector_sha256)
    frames, source_fps, stop_source = frame_source(options.source, inference.decode_limits(options.params))
    stream_clock = options.inline and not options.source.isdigit()
    clock_fps = source_fps or STREAM_FPS
    backend = inference.choose_backend(options.model, options.backend or settings.backend)
    engine = (InlineClassifier if options.inline else ClassifierWorker)(options.model, backend,
                                                                       settings.classify_threads).open()
    pools = TrackPools(settings.pool_window, settings.forget_after)
    recorder = Recorder(options.output, options.jsonl, source_fps or STREAM_FPS)
    tally = Tally()
    fps, start = 0.0, time.perf_counter()
    last = start
    previous_sigterm = _interrupt_on_sigterm()
    try:
        for frame in frames:
            if frame is None or frame.size == 0:
                tally.unreadable_frames += 1
                continue
            index = tally.frames
            tally.frames += 1
            wall = time.perf_counter()
            now = index / clock_fps if stream_clock else wall
            people = step(frame, index, now, face_detector, engine, pools, settings, tally)
            fps = 1 / max(wall - last, 1e-6) if index == 1 else 0.9 * fps + 0.1 / max(wall - last, 1e-6)
            last = wall
            if stream_clock:
                status = f"frame {index}  {now:.2f} s"
            else:
                latency = engine.latencies[-1][1] if engine.latencies else None
                status = f"{fps:4.1f} FPS" + (f"  classify {latency * 1000:.0f} ms" if latency else "")
            draw(frame, people, status)
            seconds = index / source_fps if source_fps else (now if stream_clock else wall - start)
            recorder.write(frame, frame_record(index, seconds, people))
            if not options.headless:
                cv2.imshow("argml (q quits)", frame)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
            if options.max_frames and tally.frames >= options.max_frames:
                break
    except KeyboardInterrupt:
        pass
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
        stop_source()
        engine.stop()
        recorder.close()
        if not options.headless:
            cv2.destroyAllWindows()
    elapsed = time.perf_counter() - start
    return {"frames": tally.frames, "unreadable_frames": tally.unreadable_frames, "tracks": sorted(tally.tracks),
            "classified_faces": tally.classified_faces, "backend": backend, "pool_resets": pools.resets,
            "seconds": elapsed, "fps": tally.frames / elapsed if elapsed else 0.0,
            "classify_latency_per_face": [seconds / faces for faces, seconds in engine.latencies if faces]}
