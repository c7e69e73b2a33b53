"""kctl: Kettle's command line, in Docker's idiom, talking to kettled."""
