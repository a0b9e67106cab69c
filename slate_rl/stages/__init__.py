"""One thin module per Snakemake rule (and ``slate-rl`` subcommand).

A stage parses its options, loads and validates its inputs, calls the library and writes its
outputs atomically. Nothing imports this package except the command-line entry point.
"""
