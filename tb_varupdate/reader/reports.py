"""The JSON documents of docs/HTTP_API.md, from data already read. Pure: no I/O.

Each function takes `reading.TagRecords`, `history.History` or verdict
documents and returns a JSON-ready dict; `service` (through `cache.RecordCache`) decides what to
read and keeps the results.
"""

import numpy as np

from tensorboard import errors

from tb_varupdate.format import metadata as md
from tb_varupdate.reader import buckets as buckets_lib
from tb_varupdate.reader import history as history_lib
from tb_varupdate.reader import jsonutil
from tb_varupdate.verdicts import analysis

# Significant digits sent: float32 holds ~7; a heatmap colour needs far fewer.
SERIES_DIGITS = 7
HEATMAP_DIGITS = 4

# A user who wants every record in the charts passes this to TensorBoard.
SAMPLES_HINT = "--samples_per_plugin=%s=0" % md.PLUGIN_NAME

# The keys of a verdicts (`variables` route) document.
VERDICT_KEYS = ("run", "tag", "step", "logged", "summary", "rows", "warnings")


def verdicts_report(records):
    """The `variables` route's document for one `reading.TagRecords`."""
    warnings = list(records.warnings)
    rows = []
    if records.readable:
        try:
            rows = analysis.verdicts(records.entries, records.newest, records.newest_step)
        except (md.FormatError, TypeError, ValueError, KeyError, IndexError, OverflowError) as err:
            # A variables record with the right keys but values that do not
            # fit the updates record ends up here: no verdict beats a wrong one.
            warnings.append(
                "%s %s: no verdicts, the records do not fit together: %s" % (records.run, records.tag, err)
            )
            rows = []
    return jsonutil.json_safe(
        {
            "run": records.run,
            "tag": records.tag,
            "step": records.newest_step,
            "logged": records.newest.logged if records.newest is not None else 0,
            "summary": analysis.summarize(rows),
            "rows": rows,
            "warnings": warnings,
        }
    )


def unreadable_reason(records, report):
    """Why a tag gave no verdicts (its first warning), or None when it did.

    A tag is unreadable when it has no readable updates record, nothing names
    its rows, or its records do not fit together.
    """
    if report["rows"] or (records.readable and not records.newest.num_variables):
        return None
    return report["warnings"][0] if report["warnings"] else "%s %s: no readable records" % (records.run, records.tag)


def runs_report(scan, verdicts):
    """The `runs` route's document.

    Args:
      scan: the `reading.Scan`.
      verdicts: {(run, tag): verdicts document} of every tag in `scan.updates`.
    """
    warnings = list(scan.warnings)
    runs = []
    for run, tags in scan.updates.items():
        entries = []
        for tag in sorted(tags):
            report = verdicts[run, tag]
            warnings.extend(report["warnings"])
            entry = {"tag": tag, "last_step": report["step"], "logged": report["logged"]}
            entry.update(report["summary"])
            entries.append(entry)
        runs.append({"run": run, "tags": entries})
    return {"runs": runs, "warnings": warnings}


def _row_indices(records, variables, indices):
    """[(key, row index)] of the rows asked for, in the order asked.

    Args:
      records: a `reading.TagRecords`.
      variables: names; a name that several rows carry gives the first of
        them (the `index` parameter reaches the others).
      indices: row indices (ints).

    Returns:
      (pairs, warnings).

    Raises:
      errors.NotFoundError: a name or index the tag does not have.
    """
    names = records.names()
    # One pass over the names, however many are asked for: a request naming
    # 1,500 of 20,000 variables must not search the list 1,500 times.
    rows_of = {}
    for index, name in enumerate(names):
        rows_of.setdefault(name, []).append(index)
    pairs, warnings = [], []
    for name in variables:
        if name not in rows_of:
            raise errors.NotFoundError(
                "no variable %r in %s %s; the variables route lists them" % (name, records.run, records.tag)
            )
        if len(rows_of[name]) > 1:
            warnings.append(
                "%s %s: %d variables are named %r; this series is row %d's, ask for index=N (the "
                "variables route's `index`) for the others" % (
                    records.run, records.tag, len(rows_of[name]), name, rows_of[name][0])
            )
        pairs.append((("variable", name), rows_of[name][0]))
    for index in indices:
        if not 0 <= index < len(names):
            raise errors.NotFoundError(
                "no variable at index %d in %s %s (it has %d); the variables route lists them"
                % (index, records.run, records.tag, len(names))
            )
        pairs.append((("index", index), index))
    return pairs, warnings


def _points(records, history):
    logged = int(records.newest.logged) if records.newest is not None else 0
    if len(history.logged):
        # The history may have been read after newer records arrived.
        logged = max(logged, int(history.logged[-1]))
    points = len(history.steps)
    return {"logged": logged, "points": points, "downsampled": points < logged}


def chart_warnings(records, history):
    """The tag's warnings, then those of the history that are not among them."""
    warnings = list(records.warnings)
    return warnings + [warning for warning in history.warnings if warning not in warnings]


def series_report(records, history, variables, indices=()):
    """The `series` route's document.

    Args:
      records: a `reading.TagRecords`.
      history: its `history.History`.
      variables: variable names (`series`, keyed by name).
      indices: row indices (`by_index`, keyed by the index as a string): the
        only way to reach a variable whose name another one also has.

    Raises:
      errors.NotFoundError: a name or index that the tag does not have.
    """
    pairs, warnings = _row_indices(records, variables, indices)
    mask_all = history_lib.presence(history, records.entries)
    names = records.names()
    series, by_index = {}, {}
    for (kind, key), index in pairs:
        if index < history.width:
            mask = mask_all[:, index]
            column = {
                key_: jsonutil.round_significant(matrix[mask, index], SERIES_DIGITS)
                for key_, matrix in history.columns.items()
            }
            steps = history.steps[mask]
        else:
            # No kept record has this row (all unreadable, or it joined later).
            column = {key_: np.zeros(0) for key_ in history.columns}
            steps = np.zeros(0, dtype=np.int64)
        grad = column[md.GRAD_L2]
        one = {
            "step": steps.tolist(),
            "delta_l2": column[md.DELTA_L2].tolist(),
            "value_l2": column[md.VALUE_L2].tolist(),
            "relative_update": jsonutil.round_significant(
                analysis.relative_update(column[md.DELTA_L2], column[md.VALUE_L2]), SERIES_DIGITS
            ).tolist(),
            # Negative values are GRAD_* sentinels, told apart by gradient_state.
            "gradient_l2": np.where(grad >= 0, grad, np.nan).tolist(),
            "gradient_state": md.grad_state(grad).tolist(),
        }
        if kind == "variable":
            series[key] = one
        else:
            by_index[str(key)] = dict(one, variable=names[index], index=index)
    document = {"run": records.run, "tag": records.tag}
    document.update(_points(records, history))
    document.update(
        {"samples_hint": SAMPLES_HINT, "series": series, "by_index": by_index,
         "warnings": chart_warnings(records, history) + warnings}
    )
    return jsonutil.json_safe(document)


def heatmap_values(records, history):
    """Relative update per kept record and row, NaN where a record lacks the row.

    float32 [records, width]: what every bucket count of the heatmap is cut
    from, so `cache.Entry` computes it once per tag.
    """
    relative = analysis.relative_update(
        history.columns[md.DELTA_L2], history.columns[md.VALUE_L2], dtype=np.float32
    )
    relative[~history_lib.presence(history, records.entries)] = np.nan
    return relative


def heatmap_report(records, verdicts, history, values, buckets):
    """The `heatmap` route's document: largest relative update per bucket.

    Args:
      records, history: as for `series_report`.
      verdicts: the tag's verdicts document (rows follow its order: problems first).
      values: `heatmap_values(records, history)`.
      buckets: the largest number of step buckets.
    """
    names = records.names()
    # Verdict order when there are verdicts, else row order; only rows that
    # some kept record carries and that have a name. Rows are told apart by
    # their index, never by name: two variables may share one.
    order = [row["index"] for row in verdicts["rows"]] or range(len(names))
    indices = [index for index in order if index < min(history.width, len(names))]
    order = [names[index] for index in indices]
    starts, ends, matrix = buckets_lib.bucket_max(history.steps, values, buckets)
    document = {
        "run": records.run,
        "tag": records.tag,
        "variables": order,
        "indices": indices,
        "bucket_start": starts.tolist(),
        "bucket_end": ends.tolist(),
        # NaN already None: json_safe over 200,000 cells would cost more
        # than the rest of the route.
        "values": jsonutil.nan_to_none(jsonutil.round_significant(matrix[indices], HEATMAP_DIGITS)),
    }
    document.update(_points(records, history))
    document["warnings"] = verdicts["warnings"] + [
        warning for warning in history.warnings if warning not in verdicts["warnings"]
    ]
    return document


# What the compare matrix draws of each run's row (a `variables` row's keys).
BADGE_KEYS = ("status", "label", "quiet", "severity", "allowed")


def compare_report(tag, verdicts):
    """The `compare` route's document.

    Args:
      tag: the updates tag compared.
      verdicts: {run: verdicts document, or None for a run without the tag}.

    Returns:
      Rows matched by variable name; rows where runs disagree first, then
      the most severe, then by name.
    """
    runs = list(verdicts)
    warnings = []
    by_run = {}
    for run, report in verdicts.items():
        if report is None:
            warnings.append("%s: has no tag %r" % (run, tag))
            by_run[run] = {}
            continue
        warnings.extend(report["warnings"])
        # Keyed by (name, occurrence): the second variable called "x" in a
        # run meets the second one called "x" in another, never the first.
        by_run[run] = {}
        seen_names = {}
        for row in sorted(report["rows"], key=lambda row: row.get("index", 0)):
            occurrence = seen_names.get(row["variable"], 0)
            seen_names[row["variable"]] = occurrence + 1
            by_run[run][row["variable"], occurrence] = row
    names = []
    seen = set()
    for run in runs:
        for name in by_run[run]:
            if name not in seen:
                seen.add(name)
                names.append(name)
    rows = []
    for name in names:
        found = [by_run[run][name] for run in runs if name in by_run[run]]
        statuses = {run: by_run[run][name]["status"] if name in by_run[run] else None for run in runs}
        gradients = {run: by_run[run][name]["gradient"] if name in by_run[run] else None for run in runs}
        # Each run's badge as its own variables row draws it, so the matrix
        # restates no rule (a variable frozen in one run only is quiet there only).
        badges = {run: {key: by_run[run][name][key] for key in BADGE_KEYS} if name in by_run[run] else None
                  for run in runs}
        rows.append(
            {
                "variable": name[0],
                "occurrence": name[1],
                "indices": {run: by_run[run][name].get("index") if name in by_run[run] else None for run in runs},
                "trainable": any(row["trainable"] for row in found),
                "statuses": statuses,
                "gradients": gradients,
                "badges": badges,
                "disagree": len(set(statuses.values())) > 1,
                "_severity": max(row["severity"] for row in found),
            }
        )
    rows.sort(key=lambda row: (not row["disagree"], -row["_severity"], row["variable"], row["occurrence"]))
    for row in rows:
        del row["_severity"]
    return {"tag": tag, "runs": runs, "rows": rows, "warnings": warnings}
