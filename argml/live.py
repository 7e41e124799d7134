"""Live demo: `python -m argml.live [SOURCE] [--model URI|FILE] [--detector PATH|URL] [--headless ...]`.

Three jobs in three places:
- capture: a webcam is read by its own thread that keeps only the newest frame (a video file, an image or a
  folder of images is read in order);
- inference: a worker thread owns the classifier (and the dlib aligner) and takes one batch of faces at a
  time; the main loop never waits for it (`--inline` classifies in the main loop instead, for debugging);
- display, on the main thread: YOLO finds and tracks faces (Ultralytics' ByteTrack), each person's answers
  are pooled over time (argml.pooling), and box, labels, track id and FPS are drawn. `q` quits.
Models, alignment and the detector come from argml.inference.
Settings: the `live` section of params.yaml.
"""

from __future__ import annotations

from argml import inference  # first: it fixes the import order of torchvision and TensorFlow

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import queue  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from argml import detect  # noqa: E402
from argml.classifier import predicted_classes  # noqa: E402
from argml.files import IMAGE_SUFFIXES, read_image  # noqa: E402
from argml.pooling import TrackPools  # noqa: E402


class ClassifierWorker(threading.Thread):
    """Classifies one batch of faces at a time in its own thread, with its own model."""

    def __init__(self, model: str, backend: str = "keras", threads: int = 0):
        super().__init__(name="argml-classifier", daemon=True)
        self.model, self.backend, self.threads = model, backend, threads
        self.jobs: queue.Queue = queue.Queue(maxsize=1)
        self.results: queue.Queue = queue.Queue()
        self.ready = threading.Event()
        self.busy = threading.Event()
        self.error: BaseException | None = None
        self.description: dict = {}  # the model's model.json: classes and age read-out
        self.latencies: list[tuple[int, float]] = []  # (faces, seconds) per batch

    def run(self):
        try:
            classifier = inference.FaceClassifier(self.model, self.backend, self.threads)  # in the thread using it
            self.description = classifier.description
        except BaseException as error:  # reported by the main thread
            self.error = error
            self.ready.set()
            return
        self.ready.set()
        while (job := self.jobs.get()) is not None:
            track_ids, frame_rgb, boxes = job
            start = time.perf_counter()
            try:
                answers = classifier.probabilities(frame_rgb, boxes)
            except Exception as error:  # one bad crop must not stop the demo
                print(f"live: classification failed: {error}", file=sys.stderr)
                answers = []
            self.latencies.append((len(boxes), time.perf_counter() - start))
            for track_id, answer in zip(track_ids, answers):
                self.results.put((track_id, answer))
            self.busy.clear()

    def submit(self, track_ids, frame_rgb, boxes) -> bool:
        """Queue a batch if none is in flight; never blocks."""
        if self.busy.is_set():
            return False
        self.busy.set()
        self.jobs.put((track_ids, frame_rgb, boxes))
        return True

    def drain(self):
        while True:
            try:
                yield self.results.get_nowait()
            except queue.Empty:
                return

    def open(self) -> "ClassifierWorker":
        self.start()
        self.ready.wait()
        if self.error:
            raise self.error
        return self

    def stop(self):
        self.jobs.put(None)
        self.join(timeout=10)


class InlineClassifier:
    """The worker's interface, run synchronously in the calling thread (`--inline`, for debugging)."""

    def __init__(self, model: str, backend: str = "keras", threads: int = 0):
        self.model, self.backend, self.threads = model, backend, threads
        self.results: list = []
        self.latencies: list[tuple[int, float]] = []

    def open(self) -> "InlineClassifier":
        self.classifier = inference.FaceClassifier(self.model, self.backend, self.threads)
        self.description = self.classifier.description
        return self

    def submit(self, track_ids, frame_rgb, boxes) -> bool:
        start = time.perf_counter()
        self.results += zip(track_ids, self.classifier.probabilities(frame_rgb, boxes))
        self.latencies.append((len(boxes), time.perf_counter() - start))
        return True

    def drain(self):
        results, self.results = self.results, []
        return results

    def stop(self):
        pass


# --- frame sources --------------------------------------------------------------------------------------

class CameraReader(threading.Thread):
    """Reads a webcam continuously and keeps only the newest frame, so a slow consumer sees fresh frames."""

    def __init__(self, index: int, give_up_after: int = 30):
        super().__init__(name="argml-camera", daemon=True)
        self.capture = cv2.VideoCapture(index)
        if not self.capture.isOpened():
            raise RuntimeError(f"camera {index} could not be opened (is it connected and free?)")
        self.give_up_after = give_up_after
        self.lock = threading.Lock()
        self.frame: np.ndarray | None = None
        self.sequence = 0
        self.stopped = threading.Event()
        self.lost = False

    def run(self):
        failures = 0
        while not self.stopped.is_set():
            ok, frame = self.capture.read()
            if not ok:
                failures += 1
                if failures >= self.give_up_after:
                    self.lost = True
                    break
                time.sleep(0.01)
                continue
            failures = 0
            with self.lock:
                self.frame, self.sequence = frame, self.sequence + 1
        self.capture.release()
        self.stopped.set()

    def frames(self):
        self.start()
        seen = 0
        while not self.stopped.is_set() or self.sequence > seen:
            with self.lock:
                frame, sequence = self.frame, self.sequence
            if sequence == seen:
                time.sleep(0.002)
                continue
            seen = sequence
            yield frame
        if self.lost:
            print("live: the camera stopped delivering frames (disconnected?); exiting", file=sys.stderr)

    def stop(self):
        self.stopped.set()


def frame_source(source: str):
    """(frames iterator, frames per second or None, stop callable). Unreadable images yield None."""
    if source.isdigit():
        camera = CameraReader(int(source))
        return camera.frames(), None, camera.stop
    path = Path(source)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise FileNotFoundError(f"no images in {path}")
        return (read_image(p) for p in images), None, lambda: None
    if not path.exists():
        raise FileNotFoundError(f"source {source!r} is neither a camera index, a file nor a folder")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return iter([read_image(path)]), None, lambda: None
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise RuntimeError(f"cannot open video {path}")
    fps = capture.get(cv2.CAP_PROP_FPS) or None

    def read():
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield frame
        capture.release()

    return read(), fps, capture.release


# --- drawing and records ----------------------------------------------------------------------------------

@dataclass
class Labelled:
    track_id: int | None
    box: tuple[float, float, float, float]
    observations: int
    labels: dict[str, tuple[str, float]] | None  # task -> (class, probability)
    probabilities: dict[str, list[float]] | None


def describe(pooled: dict[str, np.ndarray] | None, description: dict):
    """A person's labels (class, probability) and distributions from their pooled probabilities; age labels
    follow the model's read-out, as in argml.predict and evaluate."""
    if pooled is None:
        return None, None
    batch = {task: np.asarray(p)[None] for task, p in pooled.items()}
    chosen = predicted_classes(batch, description)
    classes = description["classes"]
    labels = {task: (classes[task][int(chosen[task][0])], float(pooled[task][int(chosen[task][0])]))
              for task in pooled}
    return labels, {task: [round(float(v), 5) for v in p] for task, p in pooled.items()}


def draw(frame: np.ndarray, people: list[Labelled], fps: float, latency: float | None) -> None:
    for person in people:
        x1, y1, x2, y2 = (int(v) for v in person.box)
        color = (0, 200, 0) if person.labels else (0, 200, 255)
        cv2.rectangle(frame, (x1, y1), (x2, y2), color, 2)
        lines = [f"#{person.track_id}" if person.track_id is not None else "#?"]
        if person.labels:
            lines[0] += f"  n={person.observations}"
            lines += [f"{task} {name} {prob:.0%}" for task, (name, prob) in person.labels.items()]
        for row, text in enumerate(reversed(lines)):
            y = max(12, y1 - 6 - 16 * row)
            cv2.putText(frame, text, (x1, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(frame, text, (x1, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
    status = f"{fps:4.1f} FPS" + (f"  classify {latency * 1000:.0f} ms" if latency else "")
    cv2.putText(frame, status, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(frame, status, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)


# --- the loop ---------------------------------------------------------------------------------------------

def check_writable(path: str | None, suffixes: tuple[str, ...], option: str) -> None:
    """Fail before any work when an output cannot be written, instead of after it (or silently)."""
    if not path:
        return
    target = Path(path)
    if target.suffix.lower() not in suffixes:
        raise ValueError(f"{option} must end in {' or '.join(suffixes)}, got {target.name!r}")
    if target.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name")
    existing = target.parent.absolute()
    while not existing.exists() and existing != existing.parent:  # missing folders are made when writing
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: cannot write there ({existing} is a file, not a folder)")
    if not os.access(existing, os.W_OK):
        raise ValueError(f"{option} {path}: cannot write there ({existing} is not writable)")


def _interrupt_on_sigterm():
    """SIGTERM ends the loop like Ctrl-C, so the video file is finished and playable. -> the old handler."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        return signal.signal(signal.SIGTERM, interrupt)
    return None


def run(source: str = "0", model: str = inference.DEFAULT_MODEL, detector: str | None = None, headless: bool = False,
        output: str | None = None, jsonl: str | None = None, inline: bool = False, max_frames: int = 0,
        params: str = "params.yaml", detector_sha256: str = "", backend: str | None = None) -> dict:
    """Run the demo; returns a summary (frames, unreadable frames, tracks, pool resets, fps, latencies, the
    classifier's backend). `backend`: keras, litert or auto (default: params' live.backend)."""
    check_writable(output, (".mp4",), "--output")
    check_writable(jsonl, (".jsonl",), "--jsonl")
    settings = inference.settings(params)
    face_detector = inference.open_detector(settings, detector, detector_sha256)
    frames, source_fps, stop_source = frame_source(source)
    backend = inference.choose_backend(model, backend or settings.backend)
    engine = (InlineClassifier if inline else ClassifierWorker)(model, backend, settings.classify_threads).open()
    pools = TrackPools(settings.pool_window, settings.forget_after)
    writer, writer_size = None, None
    if jsonl:
        Path(jsonl).parent.mkdir(parents=True, exist_ok=True)
    records = open(jsonl, "w") if jsonl else None
    summary = {"frames": 0, "unreadable_frames": 0, "tracks": set(), "classified_faces": 0}
    fps, start = 0.0, time.perf_counter()
    last = start
    previous_sigterm = _interrupt_on_sigterm()
    try:
        for frame in frames:
            if frame is None or frame.size == 0:
                summary["unreadable_frames"] += 1
                continue
            index = summary["frames"]
            summary["frames"] += 1
            now = time.perf_counter()
            faces = face_detector.track(frame)
            tracked = [face for face in faces if face.track_id is not None]
            pools.seen([face.track_id for face in tracked], index)
            due = set(pools.due([face.track_id for face in tracked], now, settings.classify_interval))
            due_faces = [face for face in tracked if face.track_id in due]
            if due_faces and engine.submit([f.track_id for f in due_faces], cv2.cvtColor(frame, cv2.COLOR_BGR2RGB),
                                           [f.box for f in due_faces]):
                pools.submitted([f.track_id for f in due_faces], now)
                summary["classified_faces"] += len(due_faces)
            for track_id, answer in engine.drain():
                pools.add(track_id, answer)

            people = []
            for face in faces:
                pooled, count = pools.pooled(face.track_id) if face.track_id is not None else (None, 0)
                people.append(Labelled(face.track_id, face.box, count, *describe(pooled, engine.description)))
                if face.track_id is not None:
                    summary["tracks"].add(face.track_id)

            fps = 1 / max(now - last, 1e-6) if index == 1 else 0.9 * fps + 0.1 / max(now - last, 1e-6)
            last = now
            draw(frame, people, fps, engine.latencies[-1][1] if engine.latencies else None)
            if records:
                records.write(json.dumps(frame_record(index, source_fps, now - start, people)) + "\n")
            if output:
                if writer is None:
                    Path(output).parent.mkdir(parents=True, exist_ok=True)
                    writer_size = (frame.shape[1], frame.shape[0])
                    writer = cv2.VideoWriter(output, cv2.VideoWriter_fourcc(*"mp4v"), source_fps or 15, writer_size)
                    if not writer.isOpened():
                        raise RuntimeError(f"cannot write the video {output} (OpenCV's mp4 writer refused it)")
                writer.write(frame if (frame.shape[1], frame.shape[0]) == writer_size else cv2.resize(frame, writer_size))
            if not headless:
                cv2.imshow("argml (q quits)", frame)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
            if max_frames and summary["frames"] >= max_frames:
                break
    except KeyboardInterrupt:
        pass
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
        stop_source()
        engine.stop()
        if writer:
            writer.release()
        if records:
            records.close()
        if not headless:
            cv2.destroyAllWindows()
    elapsed = time.perf_counter() - start
    return {**summary, "backend": backend, "tracks": sorted(summary["tracks"]), "pool_resets": pools.resets,
            "seconds": elapsed, "fps": summary["frames"] / elapsed if elapsed else 0.0,
            "classify_latency_per_face": [seconds / faces for faces, seconds in engine.latencies if faces]}


def frame_record(index: int, source_fps: float | None, elapsed: float, people: list[Labelled]) -> dict:
    """One JSONL line: the frame's time and, per face, track id, box and pooled labels and probabilities."""
    return {"frame": index, "time": round(index / source_fps if source_fps else elapsed, 4),
            "faces": [{"track_id": p.track_id, "box": [round(v, 1) for v in p.box],
                       "observations": p.observations,
                       "labels": {task: {"label": name, "probability": round(prob, 5)}
                                  for task, (name, prob) in (p.labels or {}).items()},
                       "probabilities": p.probabilities} for p in people]}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m argml.live", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", default="0",
                        help="webcam index (default 0), a video file, an image or a folder of images")
    parser.add_argument("--model", default=inference.DEFAULT_MODEL,
                        help="MLflow models:/ URI (default %(default)s) or a .keras file with model.json beside it")
    parser.add_argument("--backend", choices=inference.BACKENDS,
                        help="classifier runtime (default: params' live.backend, auto = the model's int8 LiteRT "
                             "export where it is within tolerance of Keras)")
    parser.add_argument("--detector", help=f"YOLO face model path or URL (default ${detect.ENV_DETECTOR})")
    parser.add_argument("--detector-sha256", default="", help="expected sha256 of a --detector URL's download")
    parser.add_argument("--headless", action="store_true", help="no window (use with --output/--jsonl)")
    parser.add_argument("--output", help="write the annotated video here (.mp4)")
    parser.add_argument("--jsonl", help="write per-frame predictions here (.jsonl)")
    parser.add_argument("--inline", action="store_true", help="classify in the main loop (debugging)")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0 = no limit)")
    parser.add_argument("--params", default="params.yaml", help="settings file (its `live` section)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = run(**vars(args))
    except (OSError, RuntimeError, ValueError) as error:
        print(f"live: {error}", file=sys.stderr)
        return 2
    print(f"live: {summary['frames']} frames ({summary['unreadable_frames']} unreadable), "
          f"{len(summary['tracks'])} people tracked, {summary['fps']:.1f} FPS, {summary['backend']} classifier")
    if summary["frames"] == 0:
        print(f"live: no frame of {args.source} could be read (a damaged or unsupported file?)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
