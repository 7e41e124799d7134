"""Presets: a YAML file of only the settings that differ from params.yaml, applied onto it.

    argml presets presets/gpu.yaml        # rewrites params.yaml; `dvc params diff` shows the change
    argml presets presets/gpu.yaml --dry-run

A preset holds only what it changes, so a default changed in params.yaml reaches every preset. Applying one
keeps params.yaml's layout and comments (ruamel.yaml, as `dvc exp run -S` does), refuses a key params.yaml
lacks (a typo must not be ignored), checks the result as the `params` stage would, and replaces params.yaml
only once all of that passed.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from argml.pipeline.params import check_params
from argml.core.errors import BadInput, command, one_line
from argml.core.files import atomic_path


def _round_trip() -> YAML:
    yaml = YAML()  # round-trip mode: keeps comments, order and quoting
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long comment line
    return yaml


def dotted(tree: dict, prefix: str = "") -> dict[str, object]:
    """{'train': {'lr_factors': {'age': 1.0}}} -> {'train.lr_factors.age': 1.0}."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(dotted(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _load(path: str | Path):
    try:
        return _round_trip().load(Path(path).read_text())
    except YAMLError as error:
        raise BadInput(f"{path} is not valid YAML: {one_line(error)}") from error


def _plan(preset_path: str | Path, params_path: str | Path) -> tuple[dict, dict[str, tuple]]:
    """params.yaml as a round-trip tree, and what the preset changes in it (see `changes`)."""
    preset = _load(preset_path)
    if not isinstance(preset, dict) or not preset:
        raise BadInput(f"preset {preset_path}: expected a mapping of sections, got {preset!r}")
    params = _load(params_path)
    current = dotted(params)
    wanted = dotted(preset)
    unknown = sorted(set(wanted) - set(current))
    if unknown:
        raise BadInput(f"preset {preset_path}: {', '.join(unknown)} not in {params_path}")
    return params, {key: (current[key], value) for key, value in wanted.items() if current[key] != value}


def changes(preset_path: str | Path, params_path: str | Path = "params.yaml") -> dict[str, tuple]:
    """{dotted key: (value in params.yaml, value in the preset)} for the keys the preset sets to a new value.

    ValueError if the preset is not a mapping or sets a key that params.yaml does not have."""
    return _plan(preset_path, params_path)[1]


def apply(preset_path: str | Path, params_path: str | Path = "params.yaml") -> dict[str, tuple]:
    """Write the preset's values into params.yaml (atomically, after check_params passed on the result);
    returns what changed, as `changes` does."""
    params, changed = _plan(preset_path, params_path)
    for key, (_, value) in changed.items():
        *sections, name = key.split(".")
        section = params
        for part in sections:
            section = section[part]
        section[name] = value
    text = io.StringIO()
    _round_trip().dump(params, text)
    with atomic_path(params_path) as staging:
        staging.write_text(text.getvalue())
        check_params(staging)  # raises before params.yaml is replaced
    return changed


@command("presets")
def main(argv: list[str] | None = None, prog: str = "argml presets") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", help="a preset YAML, e.g. presets/gpu.yaml")
    parser.add_argument("--params", default="params.yaml", help="the params file to change (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="list what would change; write nothing")
    args = parser.parse_args(argv)
    try:
        changed = changes(args.preset, args.params) if args.dry_run else apply(args.preset, args.params)
    except (ValueError, FileNotFoundError) as error:
        raise BadInput(f"{error}; {args.params} was not changed") from error
    verb = "would change" if args.dry_run else "changed"
    print(f"presets: {args.preset} {verb} {len(changed)} setting(s) of {args.params}")
    for key, (old, new) in changed.items():
        print(f"  {key}: {old} -> {new}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
