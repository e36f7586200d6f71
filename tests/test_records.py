"""Tests of tb_varupdate.reader.records: the one-import facade names the split modules' parts."""

from tb_varupdate.reader import buckets
from tb_varupdate.reader import cache
from tb_varupdate.reader import history
from tb_varupdate.reader import jsonutil
from tb_varupdate.reader import reading
from tb_varupdate.reader import records


def test_facade_names_the_modules_objects():
    assert records.RecordCache is cache.RecordCache
    assert records.bucket_max is buckets.bucket_max
    assert records.DEFAULT_SAMPLES == history.DEFAULT_SAMPLES
    assert records.encode_json is jsonutil.encode_json
    assert records.TagRecords is reading.TagRecords


def test_facade_compare_report_takes_tag_records():
    empty = reading.TagRecords("a", "varupdate/model", None, None, None, ("a varupdate/model: skipped",))
    report = records.compare_report("varupdate/model", {"a": empty, "b": None})
    assert report["rows"] == [] and report["runs"] == ["a", "b"]
    assert report["warnings"] == ["a varupdate/model: skipped", "b: has no tag 'varupdate/model'"]
