"""Tests for containerd-shim-kettle-v2."""
