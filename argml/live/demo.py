"""The live demo as a pipeline stage: the live path, headless, on a clip made from test-split faces.

The clip is deterministic (`demo.seed`): people drawn from the test split, one per race where the split
allows, walk across a 640x480 scene; one leaves and comes back after longer than `live.forget_after` frames,
so their pool must be reset. The live loop plays it as `python -m argml.live --inline` would (the registered
model, YOLO face tracking, pooling), classifying in the loop on the clip's own clock, so the tracks, labels and
matches are the same on every run and machine. Then each face of each frame is matched to the person
standing there, and their pooled labels are compared with their true labels.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from argml.serving import inference  # first: it fixes the import order of torchvision and TensorFlow

from argml.core.config import DemoParams  # noqa: E402
from argml.core.files import atomic_path  # noqa: E402
from argml.core.labels import AGE_BIN_NAMES, GENDERS, RACES, TASKS, age_bin  # noqa: E402
from argml.live import loop  # noqa: E402
from argml.live.synthetic import Person, make_video  # noqa: E402

FRAME_SIZE = (640, 480)
FACE_SIZE = 120
ROWS = (135, 265, 400)  # face centres' heights: three lanes that never overlap, with room for labels above


def cast(split: pd.DataFrame, count: int, seed: int) -> pd.DataFrame:
    """`count` test-split faces, one per race in turn (then any), drawn with `seed`."""
    rng = np.random.default_rng(seed)
    test = split[split["split"] == "test"]
    chosen: list[str] = []
    while len(chosen) < count:
        for race in range(len(RACES)):
            pool = test[(test["race"] == race) & ~test["file"].isin(chosen)]
            if len(chosen) < count and len(pool):
                chosen.append(pool["file"].iloc[int(rng.integers(len(pool)))])
        if len(test) <= len(chosen):
            break
    return test.set_index("file").loc[chosen].reset_index()


def scene(images: list[str], frames: int, gone_for: int) -> list[Person]:
    """Up to four people: one walks right along the top lane, one left along the bottom lane, one stands
    in the middle lane and leaves for `gone_for` frames, one enters the middle lane a fifth of the way in."""
    width = FRAME_SIZE[0]
    left, right = FACE_SIZE // 2 + 10, width - FACE_SIZE // 2 - 10
    away = (frames // 3, frames // 3 + gone_for)
    people = [
        Person(images[0], (left, ROWS[0]), ((0, frames),), FACE_SIZE, end=(right, ROWS[0])),
        Person(images[1], (right, ROWS[2]), ((0, frames),), FACE_SIZE, end=(left, ROWS[2])),
        Person(images[2], (width // 4, ROWS[1]), ((0, away[0]), (away[1], frames)), FACE_SIZE),
        Person(images[3], (3 * width // 4, ROWS[1]), ((frames // 5, frames),), FACE_SIZE),
    ]
    return people[:len(images)]


def label_age_bin(label: str) -> int:
    """The 9-bin index of a shown age label: a bin name (binned model) or an age class name (exact)."""
    if label in AGE_BIN_NAMES:
        return AGE_BIN_NAMES.index(label)
    return age_bin(int(label.rstrip("+")))


def person_at(box: list[float], people: list[Person], frame: int, frames: int) -> int | None:
    """The person in view whose face centre is nearest the box's, if within half a face."""
    center = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    best, distance = None, FACE_SIZE / 2
    for index, person in enumerate(people):
        if person.in_view(frame):
            gap = float(np.linalg.norm(center - np.array(person.position(frame, frames))))
            if gap < distance:
                best, distance = index, gap
    return best


def score(records: list[dict], people: list[Person], truth: pd.DataFrame, frames: int) -> list[dict]:
    """Per person: the tracks they were given, the frames their face was labelled, and how often the pooled
    gender, race and 9-bin age shown matched their true labels."""
    rows = []
    for index, person in enumerate(people):
        row = truth.iloc[index]
        expected = {"gender": GENDERS[int(row["gender"])], "race": RACES[int(row["race"])],
                    "age": int(row["age_bin"])}
        tracks, labelled, matches = set(), 0, {"gender": 0, "race": 0, "age": 0}
        for record in records:
            for face in record["faces"]:
                if person_at(face["box"], people, record["frame"], frames) != index:
                    continue
                if face["track_id"] is not None:
                    tracks.add(face["track_id"])
                if not face["labels"]:
                    continue
                labelled += 1
                shown = {task: face["labels"][task]["label"] for task in TASKS if task != "age"}
                shown["age"] = label_age_bin(face["labels"]["age"]["label"])
                for task in matches:
                    matches[task] += shown[task] == expected[task]
        rows.append({"file": row["file"], "true": {**expected, "age": AGE_BIN_NAMES[expected["age"]]},
                     "frames_in_view": sum(person.in_view(frame) for frame in range(frames)),
                     "frames_labelled": labelled, "tracks": sorted(tracks),
                     **{f"{task}_match": round(count / labelled, 4) if labelled else None
                        for task, count in matches.items()}})
    return rows


def run(raw_dir: str | Path, split_csv: str | Path, video_out: str | Path, jsonl_out: str | Path,
        settings: DemoParams, live: loop.LiveOptions) -> dict:
    """Make the clip, play it through the live loop inline (`live`: the model, params file and backend to play
    it with), and summarise: tracks, pool resets, and per person how often their pooled labels matched the
    truth."""
    live_settings = inference.settings(live.params)
    split = pd.read_csv(split_csv)
    chosen = cast(split, min(settings.people, 4), settings.seed)
    images = [str(Path(raw_dir) / name) for name in chosen["file"]]
    frames = settings.frames
    cast_scene = scene(images, frames, gone_for=2 * live_settings.forget_after)
    with tempfile.TemporaryDirectory() as scratch:
        clip, video, jsonl = (Path(scratch) / name for name in ("clip.mp4", "annotated.mp4", "frames.jsonl"))
        make_video(clip, cast_scene, frames, FRAME_SIZE, settings.fps, settings.seed)
        summary = loop.run(dataclasses.replace(live, source=str(clip), headless=True, output=str(video),
                                               jsonl=str(jsonl), inline=True))
        records = [json.loads(line) for line in jsonl.read_text().splitlines()]
        for source, target in ((video, video_out), (jsonl, jsonl_out)):  # whole files or none
            with atomic_path(target) as staging:
                shutil.copyfile(source, staging)
    per_person = score(records, cast_scene, chosen, frames)
    labelled = [person for person in per_person if person["frames_labelled"]]
    return {
        "frames": summary["frames"], "backend": summary["backend"],
        "people": len(cast_scene), "tracks": len(summary["tracks"]), "pool_resets": summary["pool_resets"],
        "classified_faces": summary["classified_faces"],
        "match": {task: round(float(np.mean([p[f"{task}_match"] for p in labelled])), 4) if labelled else None
                  for task in TASKS},
        "per_person": per_person,
    }
