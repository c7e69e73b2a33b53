"""A small debugging front end: ``python -m kettle.image [--root DIR] COMMAND ...``.

Commands: pull REF, list, inspect REF, rm REF, gc, import FILE, export FILE REF..., verify,
rootfs REF KEY (prints the mounts of a new writable snapshot).  Not the user-facing CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

from kettle.errors import KettleError, exit_code
from kettle.image.pull import PullStats
from kettle.image.service import DEFAULT_ROOT, ImageService, RegistryOptions
from kettle.snapshot.apply import ApplyLimits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kettle.image")
    p.add_argument("--root", default=DEFAULT_ROOT)
    p.add_argument("--plain-http", action="append", default=[], metavar="HOST:PORT")
    p.add_argument("--certs-dir", action="append", default=[], metavar="DIR")
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--driver", default="auto", choices=["auto", "overlay", "copy"])
    p.add_argument("--margin", type=int, default=None, help="free-space margin in bytes")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("pull")
    s.add_argument("ref")
    s.add_argument("--platform")
    sub.add_parser("list")
    s = sub.add_parser("inspect")
    s.add_argument("ref")
    s = sub.add_parser("rm")
    s.add_argument("ref")
    sub.add_parser("gc")
    sub.add_parser("verify")
    s = sub.add_parser("import")
    s.add_argument("file")
    s.add_argument("--name")
    s = sub.add_parser("export")
    s.add_argument("file")
    s.add_argument("refs", nargs="+")
    s = sub.add_parser("rootfs")
    s.add_argument("ref")
    s.add_argument("key")
    args = p.parse_args(argv)

    options = RegistryOptions(
        plain_http=tuple(args.plain_http),
        certs_dirs=tuple(args.certs_dir) or RegistryOptions().certs_dirs,
        max_parallel=args.parallel,
    )
    limits = ApplyLimits() if args.margin is None else ApplyLimits(free_space_margin=args.margin)
    try:
        with ImageService(
            args.root, registry=options, limits=limits, snapshot_driver=args.driver
        ) as svc:
            if args.cmd == "pull":
                stats = PullStats()
                t = time.monotonic()
                rec = svc.pull(args.ref, platform=args.platform, stats=stats)
                print(f"{rec.name} {rec.target} ({time.monotonic() - t:.3f}s, {stats})")
            elif args.cmd == "list":
                for rec in svc.list():
                    print(f"{rec.name}\t{rec.target}\t{rec.platform}\t{rec.size}")
            elif args.cmd == "inspect":
                rec = svc.get(args.ref)
                print(
                    json.dumps({"image": asdict(rec), "config": asdict(svc.config(rec))}, indent=2)
                )
            elif args.cmd == "rm":
                svc.remove(args.ref)
            elif args.cmd == "gc":
                print(svc.gc())
            elif args.cmd == "verify":
                problems = svc.verify()
                for line in problems:
                    print(line)
                return 1 if problems else 0
            elif args.cmd == "import":
                for rec in svc.import_archive(args.file, name=args.name):
                    print(rec.name)
            elif args.cmd == "export":
                svc.export_archive(args.refs, args.file)
            elif args.cmd == "rootfs":
                for m in svc.prepare_rootfs(args.ref, args.key):
                    print(json.dumps(m.to_json()))
    except KettleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
