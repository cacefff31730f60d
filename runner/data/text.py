"""Reading raw text files with errors that name the file and line, never a bare UnicodeDecodeError."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input data; the message names the file (and line) at fault."""


def read_lines(path: str | Path) -> list[str]:
    """All lines of a UTF-8 text file (without newlines); missing, empty or non-UTF-8 files raise DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: file is empty")
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path}, line {lineno}: not valid UTF-8 (byte 0x{line[e.start]:02x} at byte offset {e.start})"
            ) from None
        out.append(text.rstrip("\r"))
    return out


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> tuple[list[str], list[str]]:
    """Both sides of a parallel corpus; different line counts raise DataError naming both files and counts."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)} lines: parallel files must align"
        )
    return src, tgt
