"""Per-person pooling of classifier answers over time.

Each tracked person keeps the class probabilities of their recent observations; the pooled answer is their
mean (over all observations, or the last `window`), so single-frame flips settle. A person not seen for
`forget_after` frames has left: their pool is dropped, and if the tracker gives the same id again later,
pooling starts afresh.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Pool:
    observations: deque = field(default_factory=deque)  # dicts task -> probabilities
    last_seen: int = 0
    last_submitted: float = float("-inf")  # when a face of this person was last sent to the classifier

    def pooled(self) -> dict[str, np.ndarray] | None:
        if not self.observations:
            return None
        tasks = self.observations[0].keys()
        return {task: np.mean([obs[task] for obs in self.observations], axis=0) for task in tasks}


class TrackPools:
    def __init__(self, window: int = 0, forget_after: int = 15):
        self.window, self.forget_after = window, forget_after
        self.pools: dict[int, Pool] = {}
        self.resets = 0  # pools dropped because their person left

    def seen(self, track_ids: list[int], frame_index: int) -> None:
        """Record who is in frame `frame_index`; drop the pools of people gone for `forget_after` frames."""
        for track_id in track_ids:
            self.pools.setdefault(track_id, Pool()).last_seen = frame_index
        for track_id in [t for t, pool in self.pools.items() if frame_index - pool.last_seen > self.forget_after]:
            del self.pools[track_id]
            self.resets += 1

    def due(self, track_ids: list[int], now: float, interval: float) -> list[int]:
        """The people among `track_ids` whose last classification request is `interval` seconds old or more."""
        return [track_id for track_id in track_ids
                if track_id in self.pools and now - self.pools[track_id].last_submitted >= interval]

    def submitted(self, track_ids: list[int], now: float) -> None:
        for track_id in track_ids:
            self.pools[track_id].last_submitted = now

    def add(self, track_id: int, probabilities: dict[str, np.ndarray]) -> None:
        pool = self.pools.get(track_id)
        if pool is None:  # the person left while their face was being classified
            return
        pool.observations.append(probabilities)
        if self.window and len(pool.observations) > self.window:
            pool.observations.popleft()

    def pooled(self, track_id: int) -> tuple[dict[str, np.ndarray] | None, int]:
        pool = self.pools.get(track_id)
        return (pool.pooled(), len(pool.observations)) if pool else (None, 0)
