"""Helpers shared by Kettle's integration and peer tests: OCI bundles, the probe program, a
runtime command-line wrapper, leak checks, and private containerd/podman/registry instances.

Everything here drives programs through their command line; nothing imports the runtime under
test, so the same tests validate runc, crun and kettle-runtime.
"""
