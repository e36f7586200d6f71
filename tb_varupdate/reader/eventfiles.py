"""What `tb-varupdate check` may hand to TensorBoard's loader, and what it must name instead.

TensorBoard's Python loader reads whatever a logdir holds and stays quiet about
what it could not: a directory it may not list, an event file it may not open
("Unable to reload accumulator" in its log only), a record whose checksum
fails in the middle of a file (it stops there, as if the file ended), a
record whose length field says 2**62 (`MemoryError`), a FIFO named like an
event file (it blocks for good). A CI gate that says "healthy" about data it
did not read is wrong, so `survey` walks the logdir first, the way TensorBoard
does (symlinked directories followed), and checks every event file's record
framing with bounded reads. The CLI then loads only the run directories that
read in full and names every other path with its reason.

No TensorFlow: checksums come from `crc32c` (native, or TensorBoard's stub).
"""

import dataclasses
import os
import stat
import struct

from tb_varupdate.format import crc32c


# A record longer than this is not a record being written, so a length field
# past the end of the file and above this bound is damage, not a cut tail.
# An updates record is 60 bytes a variable (2,000 variables: ~120 KB); this
# allows ~4 million. It also bounds what TensorBoard's own reader allocates
# for a cut tail that `survey` lets through: it reads a record's length in one
# piece (2**62 was a MemoryError), and the Rust loader's gRPC answers fail
# above 256 MiB anyway.
MAX_RECORD_BYTES = 256 * 2**20

# Bytes checksummed per read: the read buffer, never the record's length field.
_CHUNK = 1 << 20

_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")


def is_event_file(name):
    """True for names TensorBoard reads as event files (its `IsTensorFlowEventsFile` rule)."""
    return "tfevents" in name


def _read_exactly(handle, count):
    data = handle.read(count)
    return data if data is not None else b""


def check_event_file(path, newest):
    """Why the event file at `path` cannot be read in full, or None when it can.

    Opens without blocking (a FIFO answers at once) and refuses anything that is
    not a regular file. Walks the records: the length field's checksum, the
    length against the bytes left, the data's checksum in bounded chunks.

    Args:
      path: the file's path.
      newest: True for the newest event file of its directory, the one a
        training job may still be writing: only its last record may be cut
        short.

    Returns:
      A reason (str), or None.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        return "cannot be opened (%s)" % (err.strerror or err)
    with os.fdopen(fd, "rb", buffering=0) as handle:
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return "is not a regular file (a FIFO, socket or device named like an event file); not read"
            return _check_records(handle, info.st_size, newest)
        except OSError as err:
            return "could not be read (%s)" % (err.strerror or err)


def _check_records(handle, size, newest):
    offset = 0
    while offset < size:
        header = _read_exactly(handle, _HEADER.size)
        if len(header) < _HEADER.size:
            return _cut_tail(offset, newest)
        length, length_crc = _HEADER.unpack(header)
        if crc32c.masked_crc32c(header[:8]) != length_crc:
            return "is damaged: the record at byte %d has a length field that fails its checksum" % offset
        left = size - offset - _HEADER.size - _FOOTER.size
        if length > left:
            if length > MAX_RECORD_BYTES:
                return ("is damaged: the record at byte %d says it holds %d bytes, more than the %d left in "
                        "the file and more than any writer writes" % (offset, length, max(left, 0)))
            return _cut_tail(offset, newest)
        crc = 0
        remaining = length
        while remaining:
            chunk = _read_exactly(handle, min(remaining, _CHUNK))
            if not chunk:
                return _cut_tail(offset, newest)
            crc = crc32c.update(crc, chunk)
            remaining -= len(chunk)
        footer = _read_exactly(handle, _FOOTER.size)
        if len(footer) < _FOOTER.size:
            return _cut_tail(offset, newest)
        if crc32c.mask(crc) != _FOOTER.unpack(footer)[0]:
            return "is damaged: the record at byte %d fails its checksum" % offset
        offset += _HEADER.size + length + _FOOTER.size
    return None


def _cut_tail(offset, newest):
    if newest:
        # A record being written: TensorBoard reads it once it is complete.
        return None
    return ("is cut short at byte %d, and a newer event file follows it in the same directory, so it is "
            "not being written any more: its last record is lost" % offset)


@dataclasses.dataclass
class Survey:
    """A logdir walked as TensorBoard walks it.

    Attributes:
      runs: [(run name, directory)] of the directories whose event files read
        in full (the run name is the path relative to the logdir, "." for the
        logdir itself, as TensorBoard names runs).
      unreadable: [(run name or relative path, path, reason)] of every
        directory or event file that could not be read in full; a run
        directory holding one is not in `runs`.
      warnings: notes that cost no data (a symlink loop not followed, a
        directory whose name is not UTF-8 but holds no event files).
    """

    runs: list = dataclasses.field(default_factory=list)
    unreadable: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)


def _utf8(name):
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _holds_event_files(path, seen):
    """True when `path` or a directory below it holds an event file (best effort)."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return False
    for item in entries:
        if is_event_file(item.name):
            return True
    for item in entries:
        try:
            if item.is_dir():
                key = (item.stat().st_dev, item.stat().st_ino)
                if key not in seen and _holds_event_files(item.path, seen | {key}):
                    return True
        except OSError:
            continue
    return False


def survey(logdir):
    """Walks `logdir` and checks every event file in it. Returns a `Survey`.

    Directories are walked as TensorBoard's own walk does: a symlink to a
    directory is followed, and its runs are named by the link's path. A link
    back to a directory being walked is not followed again (TensorBoard would
    recurse until the path grows too long).
    """
    found = Survey()
    root = os.stat(logdir)
    _walk(logdir, logdir, {(root.st_dev, root.st_ino)}, found)
    return found


def _relative(logdir, path):
    return os.path.relpath(path, logdir)


def _walk(logdir, path, ancestors, found):
    run = _relative(logdir, path)
    try:
        entries = sorted(os.scandir(path), key=lambda item: item.name)
    except OSError as err:
        found.unreadable.append((run, path, "directory cannot be listed (%s); its runs are not read"
                                 % (err.strerror or err)))
        return
    events = []
    directories = []
    for item in entries:
        try:
            is_dir = item.is_dir()  # follows a symlink, as TensorBoard's walk does
        except OSError as err:
            # The entry exists but cannot be looked at (a link into a
            # directory this user may not search): it may be a run.
            found.unreadable.append((_relative(logdir, item.path), item.path,
                                     "cannot be looked at (%s); if it is a run, it is not read"
                                     % (err.strerror or err)))
            continue
        if not is_dir and not is_event_file(item.name) and item.is_symlink() and not os.path.exists(item.path):
            # A stale link (`latest` to a deleted run): nothing to read. A
            # dangling link named like an event file is checked below, and
            # fails: its records are gone.
            found.warnings.append("%r is a symlink to nothing: not read" % item.path)
            continue
        if is_dir:
            directories.append(item)
        elif is_event_file(item.name):
            events.append(item)
    problems = []
    for index, item in enumerate(events):
        if not _utf8(item.name):
            problems.append((item.path, "has a name that is not UTF-8, which TensorBoard cannot read; rename it"))
            continue
        reason = check_event_file(item.path, newest=index == len(events) - 1)
        if reason is not None:
            problems.append((item.path, reason))
    if problems:
        for file_path, reason in problems:
            found.unreadable.append((run, file_path, "event file %s; the run %r is not read"
                                     % (reason, run)))
    elif events:
        if _utf8(path):
            found.runs.append((run, path))
    for item in directories:
        try:
            info = item.stat()
        except OSError as err:
            found.unreadable.append((_relative(logdir, item.path), item.path,
                                     "directory cannot be read (%s)" % (err.strerror or err)))
            continue
        key = (info.st_dev, info.st_ino)
        if key in ancestors:
            found.warnings.append("not following %r: it leads back to a directory above it" % item.path)
            continue
        if not _utf8(item.name):
            if _holds_event_files(item.path, ancestors | {key}):
                found.unreadable.append((_relative(logdir, item.path), item.path,
                                         "directory name is not UTF-8, which TensorBoard cannot read; rename "
                                         "it to read the event files under it"))
            else:
                found.warnings.append("skipped directory %r: its name is not UTF-8, which TensorBoard cannot "
                                      "read (it holds no event files)" % item.path)
            continue
        _walk(logdir, item.path, ancestors | {key}, found)
