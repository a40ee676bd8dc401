"""PROMETHEUS_MULTIPROC_DIR for `kb serve --workers N`: the folder where every worker writes its metric files."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, MutableMapping
from pathlib import Path

from prometheus_client import values
from prometheus_client.multiprocess import mark_process_dead

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_mode() -> bool:
    """Whether prometheus_client keeps values in files shared by worker processes: it decides once, when it is
    first imported, from PROMETHEUS_MULTIPROC_DIR (`kb serve --workers N` sets it before any worker starts)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


@contextlib.contextmanager
def worker_metrics_folder(environ: MutableMapping[str, str] = os.environ) -> Iterator[Path]:
    """The folder the worker processes of `kb serve --workers N` keep their metric files in, exported as
    PROMETHEUS_MULTIPROC_DIR for the workers to inherit. An operator's own PROMETHEUS_MULTIPROC_DIR is emptied of
    metric files and kept; otherwise a fresh temporary folder is made and removed when the service stops."""
    given = environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):  # a previous run's counts would be added to this run's
            stale.unlink()
        yield folder
        return
    folder = Path(tempfile.mkdtemp(prefix="kb-metrics-"))
    environ[MULTIPROC_ENV] = str(folder)
    try:
        yield folder
    finally:
        environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


def forget_dead_workers(folder: Path) -> None:
    """Drop the per-worker gauges of worker processes that are gone (killed, replaced by uvicorn); their counters
    stay, as counts that happened."""
    for path in folder.glob("gauge_live*_*.db"):
        match = re.search(r"_(\d+)\.db$", path.name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, str(folder))
        except PermissionError:  # alive, someone else's
            pass
