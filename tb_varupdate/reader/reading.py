"""Reads `varupdate` records through a TensorBoard data provider. No TensorFlow.

Every read goes through a `Source` (the provider, request context, experiment
and sample setting: one object instead of four arguments passed down a chain)
and returns plain data: a `Scan` of the tags, a `TagRecords` per updates tag
(its newest records, enough for exact verdicts), a `history.History` when the
charts ask for it. Nothing here reads lazily: each function that reads says so.

Only `list_runs`, `list_tensors` and `read_tensors` are used, so this works
under both loaders (`context.multiplexer` is None under the Rust one). A
malformed record never raises out of here: it is skipped and explained in
`warnings`. Only an unknown run or tag raises (`tensorboard.errors.NotFoundError`,
written once, in `raise_unknown`).
"""

import dataclasses

import numpy as np

from tensorboard import errors
from tensorboard.data import provider as provider_lib

from tb_varupdate.format import metadata as md
from tb_varupdate.format import variables as vr
from tb_varupdate.reader import history as history_lib

# The fix a user needs when steps do not grow (docs/FORMAT.md, HEADER_STEP_REGRESSIONS).
STEP_FIX = "pass step=optimizer.iterations (or a global counter) to tracker.log"


@dataclasses.dataclass(frozen=True)
class Source:
    """Where records are read from.

    Attributes:
      provider: a `tensorboard.data.provider.DataProvider`.
      ctx: the request context (`tensorboard.context.RequestContext`).
      experiment_id: the experiment id ("" for a plain logdir).
      samples: the plugin's `--samples_per_plugin` value (None: default).
      thorough: read every kept record of each tag (two more provider calls
        per tag and run), to name any record that cannot be read and to tell
        when two trackers wrote to one tag; `tb-varupdate check` sets it, the
        routes leave it off (they read only the newest records for verdicts,
        and their history reads tell two writers from the updates records).
    """

    provider: object
    ctx: object
    experiment_id: str = ""
    samples: object = None
    thorough: bool = False

    def list_tensors(self, runs=None, tags=None):
        """This plugin's {run: {tag: TensorTimeSeries}}, all or filtered."""
        run_tag_filter = None
        if runs is not None or tags is not None:
            run_tag_filter = provider_lib.RunTagFilter(runs=runs, tags=tags)
        return self.provider.list_tensors(
            self.ctx, experiment_id=self.experiment_id, plugin_name=md.PLUGIN_NAME,
            run_tag_filter=run_tag_filter,
        )

    def read_tensors(self, runs, tags, downsample):
        """{run: {tag: [TensorDatum, ...]}} of `tags` in `runs`."""
        return self.provider.read_tensors(
            self.ctx, experiment_id=self.experiment_id, plugin_name=md.PLUGIN_NAME,
            downsample=downsample, run_tag_filter=provider_lib.RunTagFilter(runs=list(runs), tags=list(tags)),
        )

    def run_names(self):
        """Every run of the experiment, varupdate records or not."""
        return {run.run_name for run in self.provider.list_runs(self.ctx, experiment_id=self.experiment_id)}


@dataclasses.dataclass(frozen=True)
class Scan:
    """The varupdate tags of an experiment.

    Attributes:
      listing: {run: {tag: TensorTimeSeries}} of every varupdate tag.
      updates: {run: {tag: TensorTimeSeries}} of the readable updates tags,
        runs sorted by name.
      unreadable: ((run, tag, reason), ...) of the tags whose plugin content
        this version cannot read (another format version).
      warnings: one line per unreadable tag.
    """

    listing: dict
    updates: dict
    unreadable: tuple
    warnings: tuple


@dataclasses.dataclass(frozen=True)
class TagRecords:
    """One updates tag as read: its newest readable record and what names it.

    Attributes:
      run, tag: where the records come from.
      entries: the variables record's entries naming the rows, or None.
      newest_step: the newest readable updates record's step, or None.
      newest: that record as a `metadata.Updates`, or None.
      warnings: messages about the records the verdicts come from.
      history: the `history.History` when it was read on the way, else None.
      rows: variable rows of the newest updates record seen (sizes a history read).
      incomplete: messages (among `warnings`) saying which kept records could
        not be read, the newest updates record's first: the tag gave verdicts
        but was not read in full, which `tb-varupdate check` fails on.
    """

    run: str
    tag: str
    entries: object
    newest_step: object
    newest: object
    warnings: tuple
    history: object = None
    rows: int = 0
    incomplete: tuple = ()

    def names(self):
        """Variable names by row index (only as many as there are entries)."""
        return [entry["name"] for entry in self.entries or ()]

    @property
    def readable(self):
        """True when there is a record to give verdicts from and names for its rows."""
        return self.newest is not None and self.entries is not None


def raise_unknown(source, runs, tag, known=None):
    """Raises the NotFoundError for `tag` missing from `runs`: the one place that words it.

    Args:
      source: a `Source`.
      runs: a tuple of the one run a tag's route asks for, or the list of
        runs `compare` asks for (then "none of the runs" has the tag).
      tag: the updates tag asked for.
      known: the experiment's run names, when already listed.

    Raises:
      errors.NotFoundError: naming the first unknown run, else the tag.
    """
    known = source.run_names() if known is None else known
    unknown = [run for run in runs if run not in known]
    if unknown:
        raise errors.NotFoundError("no run %r in this logdir" % (unknown[0],))
    if isinstance(runs, tuple):
        raise errors.NotFoundError(
            "run %r has no varupdate tag %r; the runs route lists the tags" % (runs[0], tag)
        )
    raise errors.NotFoundError("none of the runs %r has the tag %r" % (list(runs), tag))


def scan(source):
    """Lists the experiment's varupdate tags (one provider call). Returns a `Scan`."""
    listing = source.list_tensors()
    found = {}
    unreadable = []
    for run in sorted(listing):
        for tag in sorted(listing[run]):
            try:
                kind = md.parse_plugin_content(listing[run][tag].plugin_content)
            except md.FormatError as err:
                unreadable.append((run, tag, str(err)))
                continue
            if kind == md.KIND_UPDATES:
                found.setdefault(run, {})[tag] = listing[run][tag]
    warnings = tuple("%s %s: skipped: %s" % item for item in unreadable)
    return Scan(listing, found, tuple(unreadable), warnings)


def tag_series(source, run, tag):
    """{tag: series, variables tag: series} of one updates tag (one provider call).

    Raises:
      errors.NotFoundError: no such run, or no such varupdate tag in it.
    """
    vtag = tag + md.VARIABLES_TAG_SUFFIX
    series = source.list_tensors(runs=[run], tags=[tag, vtag]).get(run, {})
    if tag not in series:
        raise_unknown(source, (run,), tag)
    return series


def check_updates_tag(tag, updates_series):
    """Raises NotFoundError when `tag` holds variables records, not updates.

    Returns:
      The FormatError of a plugin content this version cannot read, else None.
    """
    try:
        kind = md.parse_plugin_content(updates_series.plugin_content)
    except md.FormatError as err:
        return err
    if kind != md.KIND_UPDATES:
        raise errors.NotFoundError(
            "%r holds variable names, not updates; ask for the tracker's updates tag "
            "(the same tag without %r)" % (tag, md.VARIABLES_TAG_SUFFIX)
        )
    return None


def _choose_entries(run, tag, variables_data, newest, warnings, skipped=None):
    """(entries, writer ids) from every kept variables record; `warnings` gets the why.

    `skipped`, when given, also gets the message about unreadable records.
    """
    parsed = []
    failures = []
    for datum in variables_data:
        try:
            record = vr.parse_variables_record(datum.numpy)
        except md.FormatError as err:
            failures.append((datum.step, err))
            continue
        parsed.append((int(datum.step), record))
    if failures:
        warnings.append(history_lib.describe_skipped(run, tag, "variables", failures, len(variables_data)))
        if skipped is not None:
            skipped.append(warnings[-1])
    writers = {record.writer_id for _, record in parsed if record.writer_id}
    if not parsed:
        if newest is not None:
            warnings.append(
                "%s %s: no readable variables record (tag %s), so the rows cannot be "
                "named; the tracker writes one whenever its variable set changes."
                % (run, tag, tag + md.VARIABLES_TAG_SUFFIX)
            )
        return None, writers
    parsed.sort(key=lambda item: item[0])
    if newest is None:
        return parsed[-1][1].entries, writers
    for _, record in reversed(parsed):
        if record.names_hash == newest.names_hash:
            return record.entries, writers
    warnings.append(
        "%s %s: no kept variables record matches the updates records (names_hash %d, "
        "newest variables record has %d); names come from the newest variables record "
        "by row position and may be wrong. Was the run restarted with another model "
        "under the same tracker name?" % (run, tag, newest.names_hash, parsed[-1][1].names_hash)
    )
    return parsed[-1][1].entries, writers


def header_warnings(run, tag, newest, writers):
    """Run-level warnings from the newest record's v3 header and the writer ids seen."""
    warnings = []
    if newest is not None and newest.step_regressions > 0:
        warnings.append(
            "%s %s: %d of %d records had a step that was not greater than the previous "
            "record's (steps that restart each epoch, or a step that does not advance), so "
            "first/last update steps may be wrong; %s." % (
                run, tag, newest.step_regressions, newest.logged, STEP_FIX)
        )
    if newest is not None and newest.writer_id:
        writers = set(writers) | {newest.writer_id}
    if len(writers) > 1:
        warnings.append(history_lib.writers_warning(run, tag, len(writers)))
    return warnings


def _newest_records(run, tag, updates_data, variables_data):
    """TagRecords from the newest updates and variables records, or None.

    None when they do not simply fit together (unreadable, or a names_hash
    that differs): `_all_records` then reads every kept record, to find the
    newest that fits and to explain the others.
    """
    if not updates_data or not variables_data:
        return None
    datum = updates_data[-1]
    try:
        newest = md.parse_updates(datum.numpy)
        variables = vr.parse_variables_record(variables_data[-1].numpy)
    except md.FormatError:
        return None
    if variables.names_hash != newest.names_hash or newest.num_variables > len(variables.entries):
        return None
    writers = {variables.writer_id} if variables.writer_id else set()
    warnings = header_warnings(run, tag, newest, writers)
    return TagRecords(run, tag, variables.entries, int(datum.step), newest, tuple(warnings),
                      rows=newest.num_variables)


def _all_records(source, run, tag, rows):
    """TagRecords from every kept record, with the history read on the way."""
    vtag = tag + md.VARIABLES_TAG_SUFFIX
    data = source.read_tensors([run], [tag], history_lib.history_count(source.samples, rows))
    history = history_lib.read_history(run, tag, data.get(run, {}).get(tag, []))
    # Variables records are few (one per change of the variable set) and any
    # of them may be the one whose hash matches, so read all that were kept.
    variables_data = source.read_tensors([run], [vtag], history_lib.KEEP_ALL_SAMPLES).get(run, {}).get(vtag, [])
    warnings = list(history.warnings)
    skipped = list(history.skipped)
    entries, writers = _choose_entries(run, tag, variables_data, history.newest, warnings, skipped)
    if entries is not None and len(history.steps):
        too_wide = history.steps[history.num_rows > len(entries)]
        if len(too_wide):
            warnings.append(
                "%s %s: %d updates records have more rows than the %d named variables "
                "(first at step %d); their extra rows are not shown."
                % (run, tag, len(too_wide), len(entries), too_wide[0])
            )
    said = any(history_lib.is_writers_warning(warning) for warning in warnings)
    for warning in header_warnings(run, tag, history.newest, writers):
        # The history already said "N trackers wrote to this tag" from the
        # updates records' headers: once is enough.
        if not (said and history_lib.is_writers_warning(warning)):
            warnings.append(warning)
    newest_step = int(history.steps[-1]) if len(history.steps) else None
    return TagRecords(run, tag, entries, newest_step, history.newest, tuple(warnings), history=history, rows=rows,
                      incomplete=tuple(skipped))


def read_tags(source, tag, updates_series):
    """Reads `tag` in several runs, their newest records in one provider call.

    Args:
      source: a `Source`.
      tag: the updates tag.
      updates_series: {run: TensorTimeSeries of `tag`}.

    Returns:
      {run: TagRecords, or None for a run whose `tag` holds variables records}.
    """
    found = {}
    readable = []
    for run, series in updates_series.items():
        try:
            error = check_updates_tag(tag, series)
        except errors.NotFoundError:
            found[run] = None
            continue
        if error is not None:
            found[run] = TagRecords(run, tag, None, None, None, ("%s %s: skipped: %s" % (run, tag, error),))
        else:
            readable.append(run)
    if not readable:
        return found
    # Both tags of every run in one read: the Rust loader answers each small
    # read after ~40 ms however little it holds, so a read per run or per
    # tag would add up over 20 runs.
    vtag = tag + md.VARIABLES_TAG_SUFFIX
    newest = source.read_tensors(readable, [tag, vtag], 1)
    for run in readable:
        by_tag = newest.get(run, {})
        updates_data = by_tag.get(tag, [])
        shape = np.shape(updates_data[-1].numpy) if updates_data else ()
        rows = shape[0] - 1 if len(shape) == 2 else 0
        # A thorough read (`tb-varupdate check`) reads every kept record, so a
        # malformed older one is named too (the gate fails on what it could
        # not read, not only on what the verdict needed), and every writer id
        # of the variables and updates records is seen.
        quick = None if source.thorough else _newest_records(run, tag, updates_data, by_tag.get(vtag, []))
        found[run] = quick or _all_records(source, run, tag, rows)
    return found


def read_tag(source, run, tag):
    """Reads one updates tag's newest records (two provider calls).

    Raises:
      errors.NotFoundError: unknown run or tag, or a variables tag was named.
    """
    series = tag_series(source, run, tag)
    check_updates_tag(tag, series[tag])
    return read_tags(source, tag, {run: series[tag]})[run]


def read_history(source, records):
    """Reads the kept records of `records`' tag as a `History` (one provider call).

    The history read on the way by `read_tags` is returned without a read.
    """
    if records.history is not None:
        return records.history
    if records.newest is None and records.entries is None and records.warnings:
        # A tag of another format version: nothing to read.
        return history_lib.read_history(records.run, records.tag, [])
    count = history_lib.history_count(source.samples, records.rows)
    data = source.read_tensors([records.run], [records.tag], count)
    return history_lib.read_history(records.run, records.tag, data.get(records.run, {}).get(records.tag, []))
