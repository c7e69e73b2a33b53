"""containerd-shim-kettle-v2: the shim between containerd and Kettle's runtime.

The shim owns containers for containerd: it is their subreaper, holds their stdio, records
their exit status, publishes task events and answers containerd's task API
(``containerd.task.v2.Task``) over ttrpc.  ``kettle.shim.main`` is the program; the modules:

- ``flags``, ``address``, ``config``: the command line, socket addresses and runtime options
  exactly as containerd 1.6/1.7 pass them;
- ``start``, ``cleanup``, ``daemon``: the three modes (``start``, ``delete``, serve);
- ``service``, ``process``: the 17 task methods over a table of containers and processes;
- ``backend``: how containers are made (the in-process Kettle library or any runc-compatible
  binary);
- ``stdio``, ``ioloop``, ``reaper``, ``events``, ``oom``, ``metrics``, ``rootfs``, ``pool``:
  the parts the service stands on.

See docs/shim.md.
"""
