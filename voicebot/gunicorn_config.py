"""gunicorn settings for voicebot, read from the same environment as the app.

Loaded by ``gunicorn.conf.py`` at the top of the repository (gunicorn reads
that file by itself when started there, so ``gunicorn app:app`` and the
Procfile get it) and by ``voicebot serve``.

Worker model: a turn spends nearly all its time waiting on the LLM, so a
worker needs many turns in flight, not many cores. ``gthread`` workers give
each worker WEB_THREADS threads; worker processes (WEB_CONCURRENCY) spread
the Python work over the cores. Everything a call needs between events lives
in the session store, which is why more than one worker needs Redis.

Measured with bench/campaign.py on 2 cores, Redis, 2 workers:
- gevent instead of gthread: the same p99 overhead (74 ms vs 68 ms before
  the GC fix below) and more CPU per turn (3.35 vs 2.2 ms in the campaign,
  1.89 vs 1.5 ms at capacity), plus monkey-patching: not worth it. Measured
  again on 2026-11-24 on the defaults (capacity scenario, median of 3):
  gevent 4.09 ms of CPU per turn against gthread's 3.73.
- sync workers serve one turn per process: a 700 ms model would need
  hundreds of processes.
- Threads: a turn holds one thread while the model thinks (the model's
  deadline is kept in the turn's own thread, voicebot/egress), and
  a thread blocked on a socket costs no CPU, only its stack. 1,000 calls
  with 2 s think time and a 1.5 s model put ~215 turns in flight per worker
  on average and more on the busier one: at 256 threads per worker 203 of
  6,000 turns were shed, at 512 none (same run, 2026-11-24). Size
  WEB_THREADS to about 1.5 x turns/s per worker x model latency; the
  default, 512, covers a 1.5 s model at ~140 turns/s per worker.
"""

from __future__ import annotations

import atexit
import gc
import os
import shutil
import sys
import tempfile
from typing import Any

from voicebot import config as _config  # noqa: E402
from voicebot.platforms import load_config as _load_config  # noqa: E402
from voicebot.exceptions import ConfigError as _ConfigError  # noqa: E402

# Every start path (voicebot serve, gunicorn app:app, the Procfile) reads this
# file first: a bad setting ends it here, in one line naming the variable,
# before anything is made that would be left behind.
try:
    _settings = _load_config()
except _ConfigError as _exc:
    sys.stderr.write(f"voicebot refuses to start: {_exc}\n")
    sys.exit(2)

# prometheus_client decides at import whether it runs multi-process: the
# directory must be in the environment before any worker imports it.
_fast_tmp = "/dev/shm" if os.path.isdir("/dev/shm") else None
_own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="voicebot-metrics-", dir=_fast_tmp)
    _master_pid = os.getpid()

    def _remove_metrics_dir() -> None:
        # Also when gunicorn gives up before its on_exit hook (a port in use, say);
        # workers are forks of this process and run atexit too, hence the pid.
        if os.getpid() == _master_pid:
            shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)

    atexit.register(_remove_metrics_dir)

# Loopback unless told otherwise: on a VM a buffering proxy (nginx) sits in
# front; platforms that route to the process (Heroku, Railway) get
# --bind 0.0.0.0:$PORT from the Procfile.
bind = f"127.0.0.1:{_settings['PORT']}"
workers = _config.worker_count(_settings)
worker_class = "gthread"
threads = _settings["WEB_THREADS"]
# Turns end on their own within the LLM deadline plus a lock wait; give
# in-flight turns that long to finish on SIGTERM before workers are killed.
graceful_timeout = int(_config.lock_wait_seconds(_settings) + _settings["LLM_TIMEOUT_SECONDS"] + 5)
timeout = max(30, graceful_timeout)
# Webhook senders keep connections open between events; keep them a little
# longer than a load balancer's usual idle timeout would.
keepalive = 75
# Each worker builds its own LLM client and Redis pool after the fork.
preload_app = False
# gunicorn 25+ opens a control socket at one fixed path per user; two
# instances on one host (blue/green, tests) would fight over it, and voicebot
# is managed by signals and the process manager instead.
control_socket_disable = True
# Workers prove they are alive by touching a temporary file on every loop
# iteration; on tmpfs that costs no disk I/O (gunicorn's advice for
# containers and Heroku).
if _fast_tmp:
    worker_tmp_dir = _fast_tmp
# Limit request line and headers as gunicorn does; bodies are capped by the app.
limit_request_line = 8190


def on_starting(server: Any) -> None:
    # Values left by an earlier run would be added to this one's.
    metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    for name in os.listdir(metrics_dir):
        if name.endswith(".db"):
            os.unlink(os.path.join(metrics_dir, name))
    try:
        _config.check_worker_model(_settings, server.cfg.workers)
    except _ConfigError as exc:
        server.log.error("voicebot refuses to start: %s", exc)
        on_exit(server)
        sys.exit(2)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def nworkers_changed(server: Any, new_value: int, old_value: int | None) -> None:
    # TTIN can add workers at run time; the memory store must stay at one.
    if old_value is not None and new_value > 1 and not _settings["REDIS_URL"]:
        server.log.error("more than one worker with the in-memory store would split calls; "
                         "set REDIS_URL first. Going back to 1 worker.")
        server.num_workers = 1


def post_worker_init(worker: Any) -> None:
    # Measured (bench/campaign.py, 1,000 calls): full garbage collections of
    # the worker's heap (the SDK, Flask, pydantic: ~1M long-lived objects)
    # stalled every thread for 100-150 ms a few times a minute, which was most
    # of the p99 overhead. Freezing what start-up allocated takes it out of
    # every later collection. Each request leaves a little cyclic garbage
    # (werkzeug's URL matcher is a closure that calls itself: 8 objects), so
    # the first threshold sets how much a young collection frees at once:
    # 50,000 let ~40,000 such objects pile up, and 1,000-call runs
    # (bench/knee.py, 0.7 s model) stalled 250-300 ms in two of six; 5,000
    # (older generations as rarely as before) kept all six within 64 ms.
    gc.freeze()
    gc.set_threshold(5_000, 200, 20)
    # After the fork: threads do not survive one. Reaps expired calls into
    # their records and delivers records to CALL_REPORT_URL.
    from voicebot import background

    background.start(worker.wsgi)
    _tell_the_app_when_stopping(worker)


def _tell_the_app_when_stopping(worker: Any) -> None:
    """On SIGTERM (a deploy, a scale-down) the app's ``draining`` event is set before gunicorn's own handling:
    long-lived sockets (ConversationRelay's) finish their turn and hand their call back instead of holding the
    worker until its graceful timeout."""
    import signal

    # Imported in the worker, after the fork: the master must not load what a worker builds (metrics).
    from voicebot.runtime import runtime_of

    draining = runtime_of(worker.wsgi).draining
    gunicorns = signal.getsignal(signal.SIGTERM)

    def stopping(signum: int, frame: Any) -> None:
        draining.set()
        if callable(gunicorns):
            gunicorns(signum, frame)

    signal.signal(signal.SIGTERM, stopping)


def worker_exit(server: Any, worker: Any) -> None:
    from voicebot import close_app
    from voicebot import background

    if getattr(worker, "wsgi", None) is not None:
        background.stop(worker.wsgi)
        close_app(worker.wsgi)
