"""A transfer driven step by step (a stream read as it arrives, a request another thread may cancel): libcurl's
multi interface, its sockets waited on with ``poll``.

libcurl's own ``curl_multi_fdset`` (behind pycurl's ``CurlMulti.select``)
leaves out every descriptor past 1024, and a busy worker has more: the wait
would return at once and the stream spin on a core. So libcurl tells this
loop which sockets it watches (``M_SOCKETFUNCTION``) and when it wants to be
called anyway (``M_TIMERFUNCTION``); the loop waits with ``select.poll``,
which takes any descriptor, and hands libcurl what became ready
(``socket_action``).
"""

from __future__ import annotations

import select
import time

import pycurl

_POLL_OF = {pycurl.POLL_IN: select.POLLIN, pycurl.POLL_OUT: select.POLLOUT,
            pycurl.POLL_INOUT: select.POLLIN | select.POLLOUT}
# With nothing to wait on and no timer (libcurl between two states), a short nap rather than a spin.
IDLE_NAP_SECONDS = 0.001


class Loop:
    """One multi handle, with the connections it keeps alive, driving one easy handle at a time."""

    __slots__ = ("multi", "_watched", "_timer_at", "result")

    def __init__(self) -> None:
        self.multi = pycurl.CurlMulti()
        self._watched: dict[int, int] = {}  # descriptor -> poll events libcurl waits for
        self._timer_at: float | None = None
        self.result: int | None = None  # the handle's curl code once it is done (0: no error)
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, self._socket)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, self._timer)

    def _socket(self, what: int, fd: int, multi: object, data: object) -> None:
        if what == pycurl.POLL_REMOVE:
            self._watched.pop(fd, None)
        else:
            self._watched[fd] = _POLL_OF.get(what, 0)

    def _timer(self, ms: int) -> None:
        self._timer_at = None if ms < 0 else time.monotonic() + ms / 1000

    def add(self, curl: pycurl.Curl) -> None:
        self.result = None
        self.multi.add_handle(curl)

    def remove(self, curl: pycurl.Curl) -> None:
        try:
            self.multi.remove_handle(curl)
        except pycurl.error:
            pass

    def drive(self, timeout: float) -> None:
        """Wait at most ``timeout`` seconds for what libcurl waits for, then let it act on it."""
        now = time.monotonic()
        timer = None if self._timer_at is None else max(0.0, self._timer_at - now)
        wait = timeout if timer is None else min(timeout, timer)
        ready: list[tuple[int, int]] = []
        if self._watched:
            if wait > 0 or timer != 0:
                poller = select.poll()
                for fd, events in self._watched.items():
                    poller.register(fd, events)
                ready = poller.poll(max(0, int(wait * 1000 + 0.999)))
        elif timer is None and wait > 0:
            time.sleep(min(wait, IDLE_NAP_SECONDS))
        for fd, events in ready:
            flags = ((pycurl.CSELECT_IN if events & (select.POLLIN | select.POLLHUP) else 0)
                     | (pycurl.CSELECT_OUT if events & select.POLLOUT else 0)
                     | (pycurl.CSELECT_ERR if events & (select.POLLERR | select.POLLNVAL) else 0))
            self._act(fd, flags)
        if not ready and (self._timer_at is not None and self._timer_at <= time.monotonic() or not self._watched):
            self._act(pycurl.SOCKET_TIMEOUT, 0)
        _, done, failed = self.multi.info_read()
        if done:
            self.result = 0
        elif failed:
            self.result = failed[0][1]

    def _act(self, fd: int, flags: int) -> None:
        while True:
            code, _ = self.multi.socket_action(fd, flags)
            if code != pycurl.E_CALL_MULTI_PERFORM:
                return

    def close(self) -> None:
        self.multi.close()
