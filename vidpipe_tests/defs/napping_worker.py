"""A Celery app with one task that naps, for ``test_worker_watch.py``'s real worker
(``celery -A vidpipe_tests.defs.napping_worker worker``); its broker from ``VIDPIPE_CELERY_BROKER``."""

import os
import time

from celery import Celery

from vidpipe.defs.executor import celery_app_config

config = celery_app_config(os.environ["VIDPIPE_CELERY_BROKER"])
app = Celery("napping", broker=config["broker"], backend=config["backend"])
app.conf.update(config["config_source"])


@app.task(name="nap")
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
