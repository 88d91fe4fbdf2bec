"""Imported once per run by the forkserver that step processes fork from (see ``definitions.py``).

Dagster starts every step in a process of its own, and the first thing a step does is open
the Dagster instance. For the sqlite instance that imports sqlalchemy, alembic and the
storage classes: about 1.7 s of CPU per step on a 2-core machine. Importing the instance's
classes here, before the fork, pays that once per run instead of once per step. So does
building the job's definitions (``current_definitions``), which each step would otherwise do
again: about 0.75 s of CPU. Then everything is moved out of the garbage collector's sight
(``gc.freeze``): a step's first full collection would otherwise walk all of it again, and touch
every page the step shares with the server.

Dagster has no public API naming those classes; ``InstanceRef`` is what
``DagsterInstance.from_ref`` reads them from (see ``dagster_internals``).
"""

import gc
import importlib
import os
import tempfile

from vidpipe.definitions import PROCESS_JOB_NAME, current_definitions
from vidpipe.defs.dagster_internals import ConfigurableClassData, InstanceRef


def instance_class_modules(dagster_home: str | None) -> list[str]:
    """Modules of the storage, log, coordinator and launcher classes of the instance in ``dagster_home``.

    Without a ``DAGSTER_HOME`` (ephemeral and test instances) they are the sqlite defaults.
    """
    if dagster_home:
        ref = InstanceRef.from_dir(dagster_home)
    else:
        with tempfile.TemporaryDirectory() as empty:
            ref = InstanceRef.from_dir(empty)
    return sorted({value.module_name for value in ref._asdict().values() if isinstance(value, ConfigurableClassData)})


for module in instance_class_modules(os.environ.get("DAGSTER_HOME")):
    importlib.import_module(module)
JOB_BUILT_BEFORE_FORK = current_definitions().resolve_job_def(PROCESS_JOB_NAME)
gc.freeze()
