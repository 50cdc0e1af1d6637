"""common: the small toolkit every forkcode layer shares -- the command-line helpers (`common.cli`:
one-line errors, subcommand dispatch, options derived from config dataclasses) and the file helpers
(`common.store`: append-only JSONL row files, atomic writes, rows checked against typed records).

The bottom layer: it imports no other forkcode package (layers, bottom to top: common, judge, lm,
datagen, valuemodel, engine, bench; each imports only the ones below it).
"""
