"""The record format (docs/FORMAT.md): the tags, the updates and variables records, each with its one parser.

Imports nothing of tb_varupdate but `errors`, and no training framework.
"""

__all__ = ["crc32c", "metadata", "variables"]
