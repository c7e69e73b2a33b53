"""containerd-shim-kettle-v2: entry point.

    <shim> -namespace NS -address ADDR -publish-binary BIN -id ID [-debug] start
    <shim> -namespace NS -address ADDR -publish-binary BIN -id ID -bundle B delete
    <shim> -namespace NS -id ID -address ADDR [-debug]          (the long-lived process)
    <shim> -v

Only what a mode needs is imported: `start` stays small (it runs once per container), the
serving process loads the runtime library once and keeps it.
"""

from __future__ import annotations

import sys

VERSION = "0.1.0"


def main(argv: list[str] | None = None) -> int:
    from kettle.errors import KettleError
    from kettle.shim import flags as flagmod

    args = sys.argv[1:] if argv is None else argv
    try:
        flags = flagmod.parse(args)
        if flags.version:
            print(f"containerd-shim-kettle-v2:\n  Version:  {VERSION}\n  Revision: kettle\n")
            return 0
        if flags.info:
            from kettle.errors import Unimplemented

            raise Unimplemented("-info (runtime info for containerd 2.0) is not supported")
        if flags.action == "start":
            from kettle.shim import start

            data = b"" if sys.stdin is None else sys.stdin.buffer.read()
            address = start.run(flags, data)
            sys.stdout.write(address)
            sys.stdout.flush()
            return 0
        if flags.action == "delete":
            from kettle.shim import cleanup

            out = cleanup.run(flags)
            sys.stdout.buffer.write(out)
            sys.stdout.flush()
            return 0
        from kettle.shim import daemon

        return daemon.serve(flags)
    except KettleError as e:
        sys.stderr.write(f"containerd-shim-kettle-v2: {e}\n")
        return 1
    except OSError as e:
        sys.stderr.write(f"containerd-shim-kettle-v2: {(e.strerror or str(e)).lower()}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
