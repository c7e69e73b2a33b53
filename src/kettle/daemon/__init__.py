"""kettled: the daemon that owns images and containers and drives their shims."""
