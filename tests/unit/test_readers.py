import io
from pathlib import Path

import pytest

from bienc.config.errors import InvalidInputError
from bienc.ingest.documents import Document
from bienc.ingest.readers import BadRecord, read_csv, read_jsonl, read_path


def test_jsonl_reports_bad_lines_by_number_and_keeps_the_rest() -> None:
    data = (
        b'{"_id": "1", "title": "A", "text": "first"}\n'
        b"\n"
        b"{not json}\n"
        b'{"id": "2", "text": "second", "metadata": {"lang": "en"}}\n'
        b'{"id": "3", "text": "caf\xff"}\n'
        b'{"id": "4"}\n'
        b'{"id": "5", "text": "fifth", "version": 7}\n'
        b'{"id": "6", "text": "sixth", "version": "7"}\n'
    )
    items = list(read_jsonl(io.BytesIO(data), 1000))
    docs = [i for i in items if isinstance(i, Document)]
    bad = [i for i in items if isinstance(i, BadRecord)]
    assert [d.id for d in docs] == ["1", "2", "5"]
    assert docs[1].metadata == {"lang": "en"}
    assert (docs[0].version, docs[2].version) == (None, 7)
    assert [(b.where, b.reason.split(":")[0]) for b in bad] == [
        ("line 3", "invalid JSON"),
        ("line 5", "not valid UTF-8 (byte 24)"),
        ("line 6", "missing field 'text'"),
        ("line 8", "field 'version' must be an integer from 0 to 9007199254740991, got '7'"),
    ]


def test_csv_extra_columns_become_metadata_and_bad_rows_are_named() -> None:
    data = b'id,title,text,lang\n1,T,hello world,en\n2,,,fr\n3,,"multi\nline",de\n'
    items = list(read_csv(io.BytesIO(data), 1000))
    assert items[0] == Document("1", "hello world", "T", {"lang": "en"})
    assert isinstance(items[1], BadRecord) and items[1].where == "line 3"
    assert "'text' is empty" in items[1].reason
    assert items[2] == Document("3", "multi\nline", None, {"lang": "de"})


def test_csv_without_text_column_is_one_clear_error() -> None:
    items = list(read_csv(io.BytesIO(b"id,body\n1,x\n"), 1000))
    assert len(items) == 1 and isinstance(items[0], BadRecord)
    assert "'id' and 'text'" in items[0].reason


def test_folder_documents_are_named_by_relative_path(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "sub" / "b.md").write_text("# Beta\nbody")
    (tmp_path / "sub" / "c.bin").write_bytes(b"\x00")
    (tmp_path / "bad.txt").write_bytes(b"\xfe\xff")
    items = list(read_path(tmp_path, 1000))
    assert [getattr(i, "id", None) or i.where for i in items] == [  # type: ignore[union-attr]
        "a.txt", "bad.txt", "sub/b.md", "sub/c.bin"]
    assert isinstance(items[1], BadRecord) and "UTF-8" in items[1].reason
    assert isinstance(items[3], BadRecord) and "binary file of unknown type" in items[3].reason


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="unknown format"):
        list(read_path(path, 1000))


def test_a_line_nested_too_deeply_for_the_parser_is_a_bad_record() -> None:
    data = b'{"id": "1", "text": "x", "metadata": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}\n"
    items = list(read_jsonl(io.BytesIO(data + b'{"id": "2", "text": "ok"}\n'), 1000))
    assert isinstance(items[0], BadRecord) and items[0].where == "line 1"
    assert isinstance(items[1], Document) and items[1].id == "2"
