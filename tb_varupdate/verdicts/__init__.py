"""The verdicts: plain data in (a variables record's entries, a parsed updates record), statuses, advice and words out.

Pure: no file, HTTP or framework access. Imports only `format`.
"""

__all__ = ["analysis", "diagnosis", "precision", "stuck", "vocabulary"]
