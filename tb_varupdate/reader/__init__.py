"""The reader: records read through TensorBoard's data provider, kept, and turned into the documents of docs/HTTP_API.md.

What the plugin's routes and `tb-varupdate check` both call. Imports `format`
and `verdicts`, never a writer or a training framework.
"""

__all__ = ["buckets", "cache", "eventfiles", "history", "jsonutil", "reading", "reports"]
