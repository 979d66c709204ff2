"""Minute files staged on every core: whole small files side by side, large files cut into pieces.

`transform_stream` is one pass on one core. A run stages many minute files (a backfill) or one
large one (full-scale telemetry reaches hundreds of MB a minute), so the work is cut into pieces
and handed to worker processes:

- A file smaller than `PIECE_BYTES` is one piece.
- A larger file is cut into one piece per worker, each starting just after a newline. A piece
  counts the newlines before its start (a C-speed scan) so its rows carry the file's real line
  numbers; its rows go to its own staging folder, appended to the file's in order afterwards.
- The sha256 of a cut file is taken by this process, on a thread, while the pieces run.

The result for each file is exactly what one `transform_stream` pass would give: the same rows
in the same order, the same summary.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import schema
from .staging import JsonlStage
from .transform import MinuteFileSummary, transform_stream

PIECE_BYTES = 8 << 20
_SCAN = 8 << 20


def default_workers() -> int:
    """One per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class MinuteFileJob:
    """One minute file to stage: read `path`, write each table's rows to `<directory>/<table>.jsonl`."""

    path: Path
    minute_file: str
    directory: Path


@dataclass(frozen=True)
class _Piece:
    job: MinuteFileJob
    index: int
    start: int
    end: int  # -1: to the end of the file
    whole: bool  # the whole file: hash it too


def stage_minute_files(
    jobs: Sequence[MinuteFileJob],
    tables: Iterable[str] = schema.ALL_TABLES,
    team_aliases: Mapping[str, str] | None = None,
    workers: int | None = None,
) -> Iterator[tuple[MinuteFileJob, MinuteFileSummary, dict[str, Path]]]:
    """Stage every job; yield each job's summary and staged files, in the order of `jobs`."""
    tables = tuple(tables)
    workers = default_workers() if workers is None else workers
    pieces = [_cut(job, workers) for job in jobs] if workers > 1 else []
    if workers == 1 or len(pieces) == 1 and len(pieces[0]) == 1:  # nothing to share: no processes to start
        for job in jobs:
            yield (
                job,
                _stage_piece(_Piece(job, 0, 0, -1, True), tables, team_aliases),
                _tables_in(job.directory, tables),
            )
        return
    # fork: the workers need nothing but this module, and start in milliseconds.
    context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    with ProcessPoolExecutor(workers, mp_context=context) as pool, ThreadPoolExecutor(1) as hasher:
        futures = [
            [pool.submit(_stage_piece, piece, tables, team_aliases) for piece in file_pieces] for file_pieces in pieces
        ]
        hashes: list[Future | None] = [
            hasher.submit(_sha256, job.path) if len(file_pieces) > 1 else None for job, file_pieces in zip(jobs, pieces)
        ]
        try:
            for job, file_pieces, file_futures, file_hash in zip(jobs, pieces, futures, hashes):
                summary = file_futures[0].result()
                for piece, future in zip(file_pieces[1:], file_futures[1:]):
                    summary.merge(future.result())
                    _append_piece(job.directory, piece.index, tables)
                if file_hash is not None:
                    summary.sha256 = file_hash.result()
                yield job, summary, _tables_in(job.directory, tables)
        except BaseException:
            for future in (f for file_futures in futures for f in file_futures):
                future.cancel()
            raise


def _cut(job: MinuteFileJob, workers: int) -> list[_Piece]:
    """The file's pieces: each starts at a line's start; the first is the file's start."""
    size = job.path.stat().st_size
    if workers == 1 or size < PIECE_BYTES:
        return [_Piece(job, 0, 0, -1, True)]
    starts = [0]
    with job.path.open("rb") as f:
        for i in range(1, workers):
            f.seek(max(size * i // workers, starts[-1]))
            f.readline()  # to the start of the next line
            if f.tell() >= size:
                break
            if f.tell() > starts[-1]:
                starts.append(f.tell())
    ends = [*starts[1:], -1]
    return [_Piece(job, i, start, end, False) for i, (start, end) in enumerate(zip(starts, ends))]


def _piece_directory(directory: Path, index: int) -> Path:
    return directory if index == 0 else directory / f"piece-{index}"


def _stage_piece(piece: _Piece, tables: tuple[str, ...], team_aliases: Mapping[str, str] | None) -> MinuteFileSummary:
    job = piece.job
    with job.path.open("rb") as stream, JsonlStage(_piece_directory(job.directory, piece.index), tables) as sink:
        lines_before = _newlines_before(stream, piece.start)
        stream.seek(piece.start)
        limit = None if piece.end < 0 else piece.end - piece.start
        summary = transform_stream(
            stream, job.minute_file, sink, team_aliases, limit=limit, lines_before=lines_before, sha256=piece.whole
        )
    sink.close()
    return summary


def _newlines_before(stream, offset: int) -> int:
    count = 0
    stream.seek(0)
    while offset > 0:
        block = stream.read(min(_SCAN, offset))
        if not block:
            break
        count += block.count(b"\n")
        offset -= len(block)
    return count


def _append_piece(directory: Path, index: int, tables: tuple[str, ...]) -> None:
    """Append a piece's staged rows to the file's, in the kernel where it can."""
    source_dir = _piece_directory(directory, index)
    for table in tables:
        source = source_dir / f"{table}.jsonl"
        if source.stat().st_size:
            with source.open("rb") as src, (directory / f"{table}.jsonl").open("r+b") as dst:
                dst.seek(0, os.SEEK_END)
                _copy(src, dst)
    shutil.rmtree(source_dir)


def _copy(src, dst) -> None:
    try:
        copied = os.copy_file_range(src.fileno(), dst.fileno(), 1 << 30)
    except (AttributeError, OSError):  # no copy_file_range here, or not between these file systems
        shutil.copyfileobj(src, dst, 1 << 20)
        return
    while copied:
        copied = os.copy_file_range(src.fileno(), dst.fileno(), 1 << 30)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_SCAN):
            digest.update(block)  # releases the GIL: the pieces' results are collected meanwhile
    return digest.hexdigest()


def _tables_in(directory: Path, tables: tuple[str, ...]) -> dict[str, Path]:
    return {t: directory / f"{t}.jsonl" for t in tables}
