"""The writers: what runs inside training and writes the records.

`common` (what every writer does alike), `counters` (the fold every writer
runs, over an array namespace), `events` (event files without TensorFlow);
one package per framework (`tf`, `torch`), each the only user of its
framework. Imports `format` and `verdicts`, never `reader`.
"""

__all__ = ["common", "counters", "events"]
