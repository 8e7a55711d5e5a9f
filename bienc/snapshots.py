"""Snapshots of live collections, restores, and exports of their documents.

A snapshot is consistent while the collection is being written to. Writers of a collection
register in Redis for each batch they write (bienc.queue.reindex); a snapshot holds them, as a
reindex's fence does: a batch that has not started waits (its task is retried a second later),
the batches in flight are waited for, then the points are read (on Qdrant Edge and in local mode
under the engine's lock, so as of one moment) or a Qdrant server takes its own snapshot, and the
writers go on. So every batch is in the snapshot whole or not at all, and every document is at
one version (bienc.store.snapshot.PointsWriter leaves out what a crashed write left behind).
Where no other process or thread can write (a command that opened an embedded store itself),
nothing needs holding.

A restore checks the whole file first (bienc.store.snapshot.read), then that this bienc can
use the snapshot's model (the model, its weights and precision: the collection's recorded
encoding), writes the points into a new physical collection NAME@N+1, checks their counts, and
only then switches NAME to it (holding NAME's writers for that step) and drops the old one. A
restore that fails at any step drops what it made and leaves NAME as it was.

An export reads the documents (chunk 0 of each: id, title, text, metadata) a page at a time, in
the order of their chunk 0's point id, a hash of the document id: the same order on every
engine and every call. A page starts at the point id the last one stopped before (the cursor),
so paging misses no document and repeats none, whatever is written meanwhile: a document
written during the export appears if its place is after the cursor.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bienc.config.errors import CollectionError, InvalidInputError, StoreUnavailableError
from bienc.ingest.producer import validate_collection_name
from bienc.queue.leases import renewed
from bienc.store import snapshot
from bienc.store.interface import Store, resolved
from bienc.store.record import CollectionEncoding, next_generation, physical_name

if TYPE_CHECKING:
    from bienc.resources import Resources

log = logging.getLogger(__name__)
HOLD_TTL_S = 30.0  # a hold or a restore's lease lapses this long after its holder dies
WRITERS_POLL_S = 0.05
MAX_EXPORT_PAGE = 1000
_RESTORING = "bienc:restoring:"


def _renewed(renew: Callable[[], Any], what: str) -> contextlib.AbstractContextManager[None]:
    """Call `renew` every third of HOLD_TTL_S while inside (a lease that lapses unless its
    holder, alive, renews it)."""
    return renewed(renew, HOLD_TTL_S / 3, what)


@contextlib.contextmanager
def writes_held(resources: Resources, name: str, hold: bool) -> Iterator[None]:
    """Inside: no writer of `name` is writing (with `hold`; without, the caller knows none
    can). Writers that start meanwhile wait; the ones in flight are waited for, unless their
    process died (their lease lapses, or, on the embedded queue, their process is gone)."""
    if not hold:
        yield
        return
    registry = resources.reindexes
    holder = uuid.uuid4().hex
    since = registry.hold(name, holder, HOLD_TTL_S)
    try:
        with _renewed(lambda: registry.hold(name, holder, HOLD_TTL_S), f"the hold on {name!r}"):
            # writers numbered before the hold, which may not have seen it
            while registry.writers_before(name, since):
                time.sleep(WRITERS_POLL_S)
            yield
    finally:
        registry.release(name, holder)


def _no_reindex(resources: Resources, name: str, doing: str) -> None:
    running = resources.reindexes.get(name)
    if running is not None:
        raise CollectionError(f"collection {name!r} is being reindexed (job {running.job_id}, "
                              f"{running.where}): {doing} it once that ends; "
                              f"{running.way_out()}")


def create(resources: Resources, name: str, out: IO[bytes], *, hold: bool, portable: bool = False,
           work: Path | None = None) -> dict[str, Any]:
    """Write a snapshot of collection `name` to `out` (bienc.store.snapshot's format); returns
    its summary. `hold`: hold the collection's writers while its points are read (the
    module's docstring). `portable`: the points, even where a Qdrant server could take its
    own snapshot. `work`: where the members wait until they are packed."""
    validate_collection_name(name, physical=True)
    store = resources.store
    _no_reindex(resources, name, "snapshot")
    resolved(store, name)  # CollectionNotFoundError before anything is held
    with tempfile.TemporaryDirectory(prefix="bienc-snapshot-", dir=work) as tmp:
        folder = Path(tmp)
        with writes_held(resources, name, hold):
            physical = resolved(store, name)
            encoding = store.describe(physical)
            if not portable and store.server_snapshot(physical, folder / snapshot.QDRANT):
                info = store.info(physical)
                kind, documents, points = "qdrant", info.documents, info.points
            else:
                writer = snapshot.PointsWriter(folder, encoding.dimension)
                store.read_points(physical, writer.add)
                kind = "points"
        if kind == "points":
            documents, points = writer.finish()
        manifest = snapshot.write(out, folder, kind, name, physical, encoding, documents, points)
    log.info("snapshot of %r (%s): %d documents, %d points", name, physical, documents, points)
    return manifest.summary()


def _check_model(resources: Resources, name: str, encoding: CollectionEncoding) -> None:
    """CollectionError naming both models unless this bienc can load the snapshot's model, at
    its precision, with the weights that made its vectors."""
    try:
        resources.encoder_for(name, encoding)
    except CollectionError as exc:
        raise CollectionError(
            f"the snapshot's collection {name!r} was encoded with model {encoding.model!r} "
            f"({encoding.encoding or 'precision not recorded'}, weights "
            f"{(encoding.weights or 'not recorded')[:16]}), and this bienc cannot use that model "
            f"(its own is BIENC_MODEL={resources.settings.model}): {exc}") from exc


@contextlib.contextmanager
def _restoring(resources: Resources, name: str) -> Iterator[None]:
    """One restore of a name at a time (a second is a 409)."""
    key, token = _RESTORING + name, uuid.uuid4().hex
    lease_ms = int(HOLD_TTL_S * 1000)
    if not resources.redis.set(key, token, nx=True, px=lease_ms):
        raise CollectionError(f"a restore into {name!r} is running; wait for it to end")
    try:
        with renewed(lambda: resources.redis.set(key, token, xx=True, px=lease_ms),
                     HOLD_TTL_S / 3, f"the restore lease of {name!r}"):
            yield
    finally:
        if resources.redis.get(key) == token.encode():
            resources.redis.delete(key)


def restore(resources: Resources, source: Path, as_name: str | None = None, *, hold: bool,
            work: Path | None = None) -> dict[str, Any]:
    """Restore snapshot file `source` as collection `as_name` (default: the name it was taken
    of), replacing one of that name; returns what was restored. Nothing changes unless it all
    succeeds (the module's docstring)."""
    if as_name is not None:
        validate_collection_name(as_name)
    with tempfile.TemporaryDirectory(prefix="bienc-restore-", dir=work) as tmp:
        folder = Path(tmp)
        manifest = snapshot.read(source, folder)
        name = as_name or manifest.collection
        try:
            validate_collection_name(name)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{exc}; restore with another name (--as NAME)") from None
        _check_model(resources, name, manifest.encoding)
        store = resources.store
        with _restoring(resources, name):
            _no_reindex(resources, name, "restore")
            physical = physical_name(name, next_generation(name, store.list_physical()))
            try:
                _fill(store, physical, folder, manifest)
                with writes_held(resources, name, hold):
                    old = store.resolve(name)
                    store.switch_alias(name, physical)
                    if old is not None and old != physical:
                        store.drop_physical(old)
            except BaseException:
                if store.resolve(name) != physical:
                    with contextlib.suppress(Exception):
                        store.drop_physical(physical)
                raise
    log.info("restored %r into %s: %d documents, %d points", name, physical, manifest.documents,
             manifest.points)
    return {**manifest.summary(), "collection": name, "physical": physical}


def _fill(store: Store, physical: str, folder: Path, manifest: snapshot.Manifest) -> None:
    """Make new physical collection `physical` hold the snapshot's points, and check it does."""
    if manifest.kind == "qdrant":
        checksum = str(manifest.files[snapshot.QDRANT]["sha256"])
        store.restore_server_snapshot(physical, folder / snapshot.QDRANT, checksum)
        recorded = store.describe(physical)
        if recorded.record() != manifest.encoding.record():
            raise CollectionError(f"the restored collection records another encoding "
                                  f"({recorded.to_dict()}) than the snapshot's manifest")
    else:
        store.ensure_collection(physical, manifest.encoding)
        for batch in snapshot.points(folder, manifest):
            store.upsert(physical, batch)
    info = store.info(physical)
    if (info.documents, info.points) != (manifest.documents, manifest.points):
        raise StoreUnavailableError(
            f"the restore wrote {info.documents} documents and {info.points} points, the snapshot "
            f"holds {manifest.documents} and {manifest.points}; nothing was changed, try again")


def parse_cursor(cursor: str | None) -> str | None:
    """An export's cursor, checked: a point id an export page gave."""
    if cursor is None:
        return None
    try:
        return str(uuid.UUID(cursor))
    except ValueError:
        raise InvalidInputError(f"cursor {cursor[:80]!r} is not one an export page gave: pass "
                                "the `next_cursor` of the previous page, or none for the first") from None


def export_page(resources: Resources, name: str, cursor: str | None, limit: int
                ) -> tuple[list[dict[str, Any]], str | None]:
    """Up to `limit` documents of collection `name` from `cursor` on (None: the first), each
    {id, title, text, metadata}; and the cursor of the next page (None: the last)."""
    validate_collection_name(name, physical=True)
    if not 1 <= limit <= MAX_EXPORT_PAGE:
        raise InvalidInputError(f"limit {limit} is out of range: give 1 to {MAX_EXPORT_PAGE}")
    heads, after = resources.store.documents_page(name, parse_cursor(cursor), limit)
    documents = [{"id": head["doc_id"], "title": head.get("title"), "text": head.get("text") or "",
                  "metadata": head.get("metadata") or {}} for head in heads]
    return documents, after
