"""The decode time limit: a persistent worker process, killed and restarted when an input passes the limit.

A native hang that holds the GIL (e.g. decord #373) cannot be interrupted any other way.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time

from videopoet.pipeline.media.clip import DecodedClip
from videopoet.pipeline.media.config import MediaConfig
from videopoet.pipeline.media.decode import probe_and_decode
from videopoet.pipeline.media.errors import MediaError

WORKER_START_TIMEOUT_S = 120.0


def _worker_main(conn) -> None:
    import av  # noqa: F401  (imports happen before "ready", so they never count against an input)
    import cv2  # noqa: F401

    conn.send("ready")
    while True:
        try:
            req = conn.recv()
        except (EOFError, OSError):
            return
        if req is None:
            return
        path, cfg, is_image = req
        try:
            result = ("ok", probe_and_decode(path, cfg, is_image=is_image))
        except MediaError as err:
            result = ("media_error", err)
        except Exception as err:  # report, never die: the parent records it as a failed input
            result = ("error", (type(err).__name__, str(err)[:500]))
        try:
            conn.send(result)
        except Exception as err:
            conn.send(("error", (type(err).__name__, f"could not return the result: {err}")))


class DecodeWorker:
    """A persistent decode process; killed and restarted when an input passes its time limit or
    crashes the decoder. Start cost (spawn + imports) is paid once, not per input."""

    def __init__(self):
        self._proc = None
        self._conn = None
        self.restarts = 0

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # fork is unsafe in threaded hosts (Ray, Beam)
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker_main, args=(child,), daemon=True, name="videopoet-decode")
        me = mp.current_process()
        was_daemon = me._config.get("daemon")
        try:
            # inside a daemonic host process (a multiprocessing.Pool worker, some runners'
            # workers) multiprocessing refuses children; our child is killed with us anyway
            # (daemon=True + kill on timeout), so lift the flag just for the start
            me._config["daemon"] = False
            self._proc.start()
        finally:
            if was_daemon is not None:
                me._config["daemon"] = was_daemon
            else:
                me._config.pop("daemon", None)
        child.close()
        self._conn = parent
        if not parent.poll(WORKER_START_TIMEOUT_S) or parent.recv() != "ready":
            self.kill()
            raise RuntimeError(f"the decode worker did not start within {WORKER_START_TIMEOUT_S} s")

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            try:
                self._conn.send(None)
                self._proc.join(2)
            except Exception:
                pass
        self.kill()

    def decode(self, path: str, cfg: MediaConfig, is_image: bool | None, timeout_s: float) -> list[DecodedClip]:
        if self._proc is None or not self._proc.is_alive():
            if self._proc is not None:
                self.restarts += 1
            self.kill()
            self._start()
        t0 = time.monotonic()
        self._conn.send((str(path), cfg, is_image))
        if not self._conn.poll(timeout_s):
            self.kill()
            self.restarts += 1
            raise MediaError("timeout", "DecodeTimeout",
                             f"{path}: decoding took longer than decode_timeout_s={timeout_s:g} s; worker killed")
        try:
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            code = self._proc.exitcode if self._proc is not None else None
            self.kill()
            raise MediaError("decode", "DecoderCrashed",
                             f"{path}: the decoder process died (exit code {code}) after "
                             f"{time.monotonic() - t0:.1f} s") from None
        if kind == "ok":
            return payload
        if kind == "media_error":
            raise payload
        raise MediaError("decode", payload[0], f"{path}: unexpected decoder error ({payload[1]})")


_local = threading.local()


def decode_with_timeout(path: str, cfg: MediaConfig, is_image: bool | None = None) -> list[DecodedClip]:
    """probe_and_decode under cfg.decode_timeout_s (a per-thread worker process, reused across
    inputs); raises MediaError(stage="timeout") when the limit passes. decode_timeout_s <= 0 decodes
    in this process without a limit."""
    if cfg.decode_timeout_s is None or cfg.decode_timeout_s <= 0:
        return probe_and_decode(path, cfg, is_image=is_image)
    worker = getattr(_local, "worker", None)
    if worker is None:
        worker = _local.worker = DecodeWorker()
    return worker.decode(path, cfg, is_image, cfg.decode_timeout_s)
