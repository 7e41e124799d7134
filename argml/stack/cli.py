"""`python -m argml.stack COMMAND` (or `argml stack COMMAND`): the team stack on 127.0.0.1.

    up [--dir .stack] [--ports auto|name=port,...]   start what is not running, wait until each engine answers
    status                                           each engine: up, or why not (the end of its log); exit 1 if any is down
    env [--user trainer|reader|admin]                `export` lines for a client shell (MLflow user, DVC remote key)
    down [--purge]                                   stop the engines (--purge: delete the folder too)
    backup DIR                                       dump both databases, copy both buckets, write a manifest
    restore DIR --dir NEW                            a new stack in NEW from the backup DIR
    configure --dir /etc/argml                       production (deploy/systemd): stack.json and the files the
                                                     units read (S3 identities, MLflow's auth ini and env file)

Everything lives in the stack folder: data, logs (DIR/logs/ENGINE.log), sockets, DIR/stack.json (ports, process
ids, generated passwords and keys; mode 0600).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from argml.core.errors import command
from argml.stack import backup as backups
from argml.stack import engines
from argml.stack.state import DEFAULT_PORTS, USERS, read_state


@command("stack")
def main(argv: list[str] | None = None, prog: str = "python -m argml.stack") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("up", "down", "status", "env", "backup", "restore", "configure"))
    parser.add_argument("backup_dir", nargs="?", help="backup/restore: the backup's folder")
    parser.add_argument("--dir", default=".stack", help="the stack's folder (default %(default)s)")
    parser.add_argument("--ports", default="", help=f"'auto' or name=port pairs of {', '.join(DEFAULT_PORTS)} "
                                                    "(default: those of the last start, else 5432, 9000, 5000, ...)")
    parser.add_argument("--user", default="trainer", choices=("admin", *USERS), help="env: the MLflow user")
    parser.add_argument("--purge", action="store_true", help="down: also delete the folder (databases, logs)")
    args = parser.parse_args(argv)
    if args.command in ("backup", "restore") and not args.backup_dir:
        parser.error(f"{args.command} needs the backup's folder: python -m argml.stack {args.command} DIR")
    if args.command in ("up", "restore"):
        state = (engines.up(args.dir, args.ports) if args.command == "up"
                 else backups.restore(args.backup_dir, args.dir, args.ports))
        print(f"stack up: MLflow {engines.tracking_uri(state)}, S3 {engines.s3_endpoint(state)}, PostgreSQL "
              f"{engines.HOST}:{state['ports']['postgres']}; logs in {Path(args.dir) / 'logs'}\n"
              f"client settings: eval \"$(python -m argml.stack env --dir {args.dir})\"")
    elif args.command == "down":
        engines.down(args.dir, args.purge)
        print("stack down")
    elif args.command == "status":
        report = engines.status(args.dir)
        for engine, why in report.items():
            print(f"{engine}: up" if why is None else f"{engine}: DOWN: {why}")
        return 0 if all(why is None for why in report.values()) else 1
    elif args.command == "configure":
        print("\n".join(f"wrote {path}" for path in engines.configure(args.dir)))
    elif args.command == "env":
        print(engines.env_lines(read_state(args.dir), args.user))
    else:
        manifest = backups.backup(args.dir, args.backup_dir)
        objects = sum(len(keys) for keys in manifest["buckets"].values())
        print(f"backup: {args.backup_dir}: {len(manifest['databases'])} databases, {objects} objects, "
              f"{sum(f['bytes'] for f in manifest['files'].values()) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
