"""Bad input by the hundred (property-based, Hypothesis): the parsers argml meets first. Each generated input
gets a correct answer or a clear error of argml's own kind; none raises anything else, hangs or allocates past
a bound. Sizes and the longer run: tests/fuzzing.py."""

from __future__ import annotations

import base64
import io
import math
import re
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import example, given, strategies as st

from argml.core import config, images
from argml.core.errors import BadInput
from argml.data import utkface
from fuzzing import bad_images, examples, peak_rss, reset_peak_rss, valid_images

# --- UTKFace file names -------------------------------------------------------------------------------------

@st.composite
def utkface_names(draw) -> str:
    """Names near UTKFace's age_gender_race_datetime.jpg.chip.jpg: right, wrong in one place, or anything."""
    age = draw(st.integers(-5, 1200))
    gender, race = draw(st.integers(-1, 12)), draw(st.integers(-1, 12))
    stamp = draw(st.from_regex(r"\d{0,20}", fullmatch=True))
    name = f"{age}_{gender}_{race}_{stamp}.jpg.chip.jpg"
    way = draw(st.sampled_from(["as is", "no race", "insert", "delete", "replace", "any text"]))
    if way == "no race":
        return f"{age}_{gender}_{stamp}.jpg.chip.jpg"
    if way == "any text":
        return draw(st.text(max_size=60))
    if way == "as is":
        return name
    at = draw(st.integers(0, len(name)))
    piece = draw(st.text(min_size=1, max_size=3))
    return {"insert": name[:at] + piece + name[at:], "delete": name[:at] + name[at + 3:],
            "replace": name[:at] + piece + name[at + len(piece):]}[way]


@examples("names")
@example("1_0_0_20170116174525125.jpg.chip.jpg\n")  # found: $ matched before a final newline
@example("1_0_0_\u0660.jpg.chip.jpg")  # found: \d matched an Arabic-Indic zero
@given(utkface_names())
def test_a_file_name_gives_true_labels_or_says_why_not(name):
    try:
        parsed = utkface.parse_name(name)
    except utkface.MalformedName as error:
        assert str(error)
        return
    assert 1 <= parsed.age <= 116 and parsed.gender in (0, 1) and parsed.race in range(5)
    assert name.isascii(), "labels only from ASCII names (Python's \\d also matches other scripts' digits)"
    assert re.fullmatch(r"[0-9]{1,3}_[01]_[0-4]_[0-9]+[ \t]*\.?jpg\.chip\.jpg", name), name
    assert name.startswith(f"{parsed.age}_{parsed.gender}_{parsed.race}_")


@examples("names")
@given(st.integers(1, 116), st.integers(0, 1), st.integers(0, 4), st.from_regex(r"[0-9]{1,20}", fullmatch=True))
def test_every_regular_name_parses_to_its_labels(age, gender, race, stamp):
    parsed = utkface.parse_name(f"{age}_{gender}_{race}_{stamp}.jpg.chip.jpg")
    assert (parsed.age, parsed.gender, parsed.race, parsed.note) == (age, gender, race, "")


# --- params.yaml documents ----------------------------------------------------------------------------------

LEAVES = config._rules()  # dotted name -> its rule, for every setting
PARAMS_YAML = (Path(__file__).resolve().parents[1] / "params.yaml").read_text()

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.integers(-3, 5000),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-2, 2),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e-300, 1e308, 2**31, 2**63]),
    st.text(max_size=12), st.sampled_from(["auto", "keras", "binned", "exact", "pooled", "relu", "cosine", "mirrored",
                                           "Mixed_7a", "casia-webface", "1e-3", "yes", "~", ".nan"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)


DEFAULTS = config.flatten(config.Params())


def near_the_rules(name: str):
    """Values aimed at one setting's rule: its bounds and just past them, NaN and infinities for numbers, its
    choices and near misses for strings, lookalikes for booleans."""
    default, rule = DEFAULTS[name], LEAVES[name]
    low, high, choices = rule.get("low"), rule.get("high"), rule.get("choices")
    if isinstance(default, bool):
        return st.sampled_from([True, False, 0, 1, "yes", "true", None])
    if isinstance(default, (int, float)):
        edges = [edge for bound in (low, high) if bound is not None for edge in (bound, bound - 1, bound + 1,
                                                                                  bound * (1 - 1e-9) - 1e-12)]
        special = [math.nan, math.inf, -math.inf, 0, -1, 2**63, default, str(default), float(default)]
        return st.sampled_from(edges + special)
    if choices:
        return st.sampled_from([*choices, *(c.upper() for c in choices), *(f" {c}" for c in choices), "", 1])
    return st.one_of(st.text(max_size=20), st.sampled_from(["", " ", "../x", 0, None]))


@st.composite
def params_documents(draw):
    """The repository's params.yaml with one to three changes: a setting given any value (type, range,
    NaN, infinity, nesting), an unknown key or section, a section that is not a mapping; or no mapping at all."""
    if draw(st.integers(0, 19)) == 0:
        return draw(values)
    document = yaml.safe_load(PARAMS_YAML)
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        change = draw(st.sampled_from(["value", "value", "value", "unknown key", "unknown section", "section",
                                       "delete"]))
        name = draw(st.sampled_from(sorted(LEAVES)))
        *parents, last = name.split(".")
        node = document
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        if change == "value":
            node[last] = draw(st.one_of(near_the_rules(name), near_the_rules(name), values))
        elif change == "unknown key":
            node[draw(st.text(min_size=1, max_size=8))] = draw(values)
        elif change == "unknown section":
            document[draw(st.text(min_size=1, max_size=8))] = draw(values)
        elif change == "section":
            document[parents[0] if parents else last] = draw(values)
        else:
            node.pop(last, None)
    return document


def leaf(params: config.Params, dotted: str):
    value = params
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def assert_within_the_rules(params: config.Params) -> None:
    hints = config.flatten(params)
    for name, rule in LEAVES.items():
        value = hints[name]
        if isinstance(value, float):
            assert math.isfinite(value) or rule.get("high") is None, (name, value)
            assert not math.isnan(value), (name, value)
        low, high, choices = rule.get("low"), rule.get("high"), rule.get("choices")
        assert low is None or value >= low, (name, value)
        assert high is None or value <= high, (name, value)
        assert choices is None or value in choices, (name, value)


def write(folder: Path, text: str) -> Path:
    path = Path(tempfile.mkstemp(suffix=".yaml", dir=folder)[1])
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-params")


@examples("params")
@given(document=params_documents())
def test_a_params_document_is_taken_within_its_rules_or_refused_by_name(scratch, document):
    path = write(scratch, yaml.safe_dump(document, allow_unicode=True))
    try:
        params = config.load_params(path)
    except config.ParamsError as error:
        assert str(error).startswith("params: "), error
        return
    finally:
        path.unlink()
    assert_within_the_rules(params)
    for name in LEAVES:  # what the document set is what the settings hold
        section, *rest = name.split(".")
        node = document.get(section) if isinstance(document, dict) else None
        for part in rest:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            expected = float(node) if isinstance(leaf(params, name), float) else node
            assert leaf(params, name) == expected, name


@examples("params_text")
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
                 st.builds(lambda head, tail: head + tail, st.sampled_from(["train:\n  ", "decode: {", "a: &x [*x",
                                                                          "- ", "align:\n  size: !!python/"]),
                           st.text(max_size=60))))
def test_any_text_as_params_yaml_is_taken_or_refused_by_name(scratch, text):
    path = write(scratch, text)
    try:
        assert_within_the_rules(config.load_params(path))
    except config.ParamsError as error:
        assert str(error).startswith("params: ")
    finally:
        path.unlink()


# --- images through the one decode path ----------------------------------------------------------------------

FUZZ_LIMITS = images.Limits(max_pixels=1_000_000, max_bytes=1 << 20)
MEMORY_BOUND = 200 << 20  # above this process's RSS when the target starts


@pytest.fixture(scope="module")
def memory_start():
    start = reset_peak_rss()
    yield start
    assert peak_rss() - start < MEMORY_BOUND, f"peak RSS grew by {(peak_rss() - start) >> 20} MB"


@examples("images")
@given(data=bad_images())
def test_an_image_decodes_within_the_limits_or_is_refused(memory_start, data):
    try:
        pixels = images.decode(data, "upload", FUZZ_LIMITS)
    except images.ImageError as error:
        assert str(error).startswith("upload: ") and error.reason in images.REASONS, error
        return
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    assert 0 < pixels.shape[0] * pixels.shape[1] <= FUZZ_LIMITS.max_pixels
    assert images.image_size(data) == (pixels.shape[1], pixels.shape[0]), "the header told the truth"


@examples("images")
@given(data=valid_images())
def test_every_small_real_jpeg_or_png_decodes(data):
    pixels = images.decode(data, "photo", FUZZ_LIMITS)
    assert pixels.dtype == np.uint8 and pixels.shape[2] == 3


# --- base64 payloads of the photo model -----------------------------------------------------------------------

@st.composite
def payloads(draw):
    way = draw(st.sampled_from(["image", "bad image", "text", "almost base64", "too long", "not a string"]))
    if way in ("image", "bad image"):
        data = draw(valid_images() if way == "image" else bad_images())
        return base64.b64encode(data).decode()
    if way == "text":
        return draw(st.text(max_size=200))
    if way == "almost base64":
        encoded = base64.b64encode(draw(valid_images())).decode()
        at = draw(st.integers(0, len(encoded)))
        return encoded[:at] + draw(st.sampled_from(["=", "!", " ", "\n", "é", "==", "A"])) + encoded[at:]
    if way == "too long":
        return "A" * (4 * (FUZZ_LIMITS.max_bytes // 3 + 1) + draw(st.integers(1, 100)))
    return draw(st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=20), st.lists(st.integers())))


@examples("base64")
@given(encoded=payloads())
def test_a_base64_payload_is_decoded_or_refused_in_one_line(memory_start, encoded):
    from argml.serving import photos

    try:
        pixels = photos.decode(encoded, "me.jpg", FUZZ_LIMITS)
    except BadInput as error:
        message = str(error)
        assert message.startswith("me.jpg: ") and "\n" not in message, message
        return
    assert pixels.dtype == np.uint8 and pixels.shape[0] * pixels.shape[1] <= FUZZ_LIMITS.max_pixels


# --- dataset archives ------------------------------------------------------------------------------------------

@st.composite
def archives(draw) -> bytes:
    """A small .tar.gz or .zip of image-named files, whole, cut short, or with flipped bytes."""
    members = draw(st.lists(st.tuples(st.sampled_from(["a.jpg", "b/c.png", "../up.jpg", "/abs.jpg", "d.txt",
                                                       "e.jpg.chip.jpg", "link.jpg"]),
                                      st.binary(max_size=200)), min_size=1, max_size=4, unique_by=lambda m: m[0]))
    buffer = io.BytesIO()
    if draw(st.booleans()):
        with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
            for name, content in members:
                info = tarfile.TarInfo(name)
                if name == "link.jpg":
                    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                else:
                    info.size = len(content)
                bundle.addfile(info, io.BytesIO(content) if name != "link.jpg" else None)
    else:
        with zipfile.ZipFile(buffer, "w") as bundle:
            for name, content in members:
                bundle.writestr(name, content)
    data = buffer.getvalue()
    way = draw(st.sampled_from(["whole", "cut", "flipped"]))
    if way == "cut":
        return data[:draw(st.integers(0, len(data) - 1))]
    if way == "flipped":
        changed = bytearray(data)
        changed[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        return bytes(changed)
    return data


@examples("archives")
@given(data=archives())
def test_an_archive_is_extracted_inside_its_folder_or_refused(data):
    from argml.data.download import safe_extract

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        archive, target = root / "utk.tar.gz", root / "inside" / "target"
        archive.write_bytes(data)
        try:
            safe_extract(archive, target)
        except BadInput as error:
            assert str(error)
        outside = [path for path in root.rglob("*") if not path.is_relative_to(root / "inside")
                   and path != archive]
        assert outside == [], outside
        assert not any(path.is_symlink() for path in target.rglob("*")) if target.exists() else True

