"""Who classifies the faces of the live loop: a worker thread with its own model, one batch in flight, which the
loop never waits for; or the same calls made inline in the loop (`--inline`: for debugging, and for the demo
stage, whose answers must not depend on a thread's timing)."""

from __future__ import annotations

from argml.serving import inference  # first: it fixes the import order of torchvision and TensorFlow

import queue  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402


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
        self.card = None  # the model's card: classes and age read-out
        self.latencies: list[tuple[int, float]] = []  # (faces, seconds) per batch

    def run(self):
        try:
            classifier = inference.FaceClassifier(self.model, self.backend, self.threads)  # in the thread using it
            self.card = classifier.card
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
        self.card = self.classifier.card
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
