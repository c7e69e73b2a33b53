"""kctl's verbs, one module each: HELP, configure(parser) and run(client, args) -> exit code."""
