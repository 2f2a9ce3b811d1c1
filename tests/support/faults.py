"""A TCP fault-injection proxy for failure tests.

:class:`FaultProxy` listens on ``127.0.0.1:<free port>`` and forwards every connection to a
real service.  A test points the code under test at ``proxy.address`` instead of the service
and can then make the service *hang* (connections stay open, nothing is answered), *stall*
(the same, but what was sent is delivered once it heals, like a paused server), *vanish*
(connections are reset, new ones refused) or *heal*, without touching the shared server.

The proxy runs a ``selectors`` loop on its own daemon thread, so it keeps working while the
test's event loop is blocked or busy, and it never needs that loop.  Control methods
(:meth:`FaultProxy.hang`, :meth:`~FaultProxy.refuse`, :meth:`~FaultProxy.heal`) are executed
by the proxy thread and return once the new state is in force.
"""

from __future__ import annotations

import contextlib
import errno
import queue
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, TypeVar

__all__ = ["FaultProxy", "ProxyMode"]

ProxyMode = Literal["forward", "hang", "stall", "refuse"]

_T = TypeVar("_T")
_CHUNK = 65536
_BUFFER_LIMIT = 4 * 1024 * 1024  # stop reading a side while this much is waiting for the other
_CONTROL_TIMEOUT = 10.0


class _Pair:
    """One proxied connection: the accepted client socket and its upstream socket."""

    __slots__ = (
        "c2u",
        "client",
        "client_eof",
        "client_wr_shut",
        "closed",
        "connecting",
        "hung",
        "stalled",
        "u2c",
        "upstream",
        "upstream_eof",
        "upstream_wr_shut",
    )

    def __init__(self, client: socket.socket, upstream: socket.socket | None, *, hung: bool) -> None:
        self.client = client
        self.upstream = upstream
        self.connecting = upstream is not None
        self.hung = hung
        self.stalled = False
        self.c2u = bytearray()
        self.u2c = bytearray()
        self.client_eof = False
        self.upstream_eof = False
        self.client_wr_shut = False
        self.upstream_wr_shut = False
        self.closed = False


class FaultProxy:
    """Threaded TCP proxy in front of ``target_host:target_port`` with injectable faults.

    Modes:

    * ``forward`` (initial, and after :meth:`heal`): bytes are relayed both ways.
    * ``hang``: connections are still accepted, but nothing is forwarded or answered on new
      *and* existing connections; bytes from either side are swallowed and no connection is
      closed by the proxy.  Looks like a server that stopped answering.
    * ``stall``: nothing moves on new or existing connections, but nothing is lost either: the
      bytes wait (in the proxy and the kernel's buffers) and are delivered, in order, after
      :meth:`heal`.  Looks like a server paused with SIGSTOP: a request sent during the stall
      is carried out late.
    * ``refuse``: existing connections are reset (RST) and the listening socket is closed, so
      new connections are refused.  Looks like a server that went away.
    """

    def __init__(
        self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1", listen_port: int = 0
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = listen_host
        self._requested_port = listen_port
        self._port: int | None = None
        self._mode: ProxyMode = "forward"
        self._target: tuple[socket.AddressFamily, Any] | None = None
        self._selector: selectors.BaseSelector | None = None
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], threading.Event, list[Any]]] = queue.SimpleQueue()
        self._pairs: set[_Pair] = set()
        self._accepted = 0
        self._running = False
        self._thread: threading.Thread | None = None

    # -- public API ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FaultProxy is not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` to give to the code under test."""
        return f"{self.host}:{self.port}"

    @property
    def mode(self) -> ProxyMode:
        return self._mode

    @property
    def connection_count(self) -> int:
        """Connections currently open through the proxy (any mode)."""
        return self._call(lambda: sum(1 for pair in self._pairs if not pair.closed))

    @property
    def accepted_count(self) -> int:
        """Connections accepted since the proxy started."""
        return self._accepted

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        infos = socket.getaddrinfo(self.target_host, self.target_port, type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"cannot resolve {self.target_host}:{self.target_port}")
        family, _type, _proto, _canon, sockaddr = infos[0]
        self._target = (family, sockaddr)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        if self._mode != "refuse":
            self._listen()
        else:
            self._bind_only_port()
        self._running = True
        self._thread = threading.Thread(
            target=self._loop, name=f"FaultProxy->{self.target_host}:{self.target_port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close every connection and the listener; stop the proxy thread."""
        thread = self._thread
        if thread is None:
            return
        if thread.is_alive():
            self._call(self._request_shutdown)
            thread.join(_CONTROL_TIMEOUT)
        self._thread = None

    def hang(self) -> None:
        """Stop answering without closing connections (new and existing ones)."""
        self._call(self._do_hang)

    def stall(self) -> None:
        """Stop moving bytes on new and existing connections; :meth:`heal` delivers them late."""
        self._call(self._do_stall)

    def refuse(self) -> None:
        """Reset every existing connection and refuse new ones."""
        self._call(self._do_refuse)

    def heal(self) -> None:
        """Forward again for new connections; connections hung so far are closed."""
        self._call(self._do_heal)

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port is not None else "not started"
        return f"<FaultProxy {where} -> {self.target_host}:{self.target_port} mode={self._mode}>"

    # -- control plumbing ------------------------------------------------------------------

    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the proxy thread (or inline when the thread is not running)."""
        thread = self._thread
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            return fn()
        done = threading.Event()
        outcome: list[Any] = []
        self._commands.put((fn, done, outcome))
        self._wake()
        if not done.wait(_CONTROL_TIMEOUT):
            raise TimeoutError("FaultProxy thread did not respond")
        kind, value = outcome
        if kind == "error":
            raise value
        result: _T = value
        return result

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(BlockingIOError, OSError):
                self._wake_w.send(b"\0")

    def _run_commands(self) -> None:
        assert self._wake_r is not None
        with contextlib.suppress(BlockingIOError, OSError):
            while self._wake_r.recv(4096):
                pass
        while True:
            try:
                fn, done, outcome = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                outcome[:] = ["ok", fn()]
            except BaseException as exc:
                outcome[:] = ["error", exc]
            done.set()

    def _request_shutdown(self) -> None:
        self._running = False

    # -- mode changes (proxy thread) -------------------------------------------------------

    def _do_hang(self) -> None:
        self._mode = "hang"
        if self._selector is None:  # not running: the mode applies from start()
            return
        self._listen()
        for pair in list(self._pairs):
            self._hang_pair(pair)

    def _do_stall(self) -> None:
        self._mode = "stall"
        if self._selector is None:
            return
        self._listen()
        for pair in list(self._pairs):
            pair.stalled = True
            self._update(pair)

    def _do_refuse(self) -> None:
        self._mode = "refuse"
        if self._selector is None:
            return
        for pair in list(self._pairs):
            self._close_pair(pair, reset=True)
        self._close_listener()

    def _do_heal(self) -> None:
        self._mode = "forward"
        if self._selector is None:
            return
        for pair in list(self._pairs):
            if pair.hung:
                self._close_pair(pair)
            elif pair.stalled:
                pair.stalled = False
                self._update(pair)
        self._listen()

    # -- sockets (proxy thread) ------------------------------------------------------------

    def _bind_only_port(self) -> None:
        """Reserve a port number without listening (proxy started in ``refuse`` mode)."""
        if self._port is None:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((self.host, self._requested_port))
                self._port = sock.getsockname()[1]

    def _listen(self) -> None:
        if self._listener is not None:
            return
        assert self._selector is not None
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self._port if self._port is not None else self._requested_port))
            listener.listen(128)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._port = listener.getsockname()[1]
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, ("listen", None))

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            self._forget(listener)
            listener.close()

    def _forget(self, sock: socket.socket) -> None:
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(sock)

    def _accept(self) -> None:
        assert self._listener is not None and self._target is not None
        while True:
            try:
                client, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self._accepted += 1
            client.setblocking(False)
            _nodelay(client)
            if self._mode == "refuse":  # cannot happen (listener closed), but be safe
                _abort(client)
                continue
            upstream: socket.socket | None = None
            if self._mode in ("forward", "stall"):
                family, sockaddr = self._target
                upstream = socket.socket(family, socket.SOCK_STREAM)
                upstream.setblocking(False)
                _nodelay(upstream)
                err = upstream.connect_ex(sockaddr)
                if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                    upstream.close()
                    client.close()
                    continue
            pair = _Pair(client, upstream, hung=self._mode == "hang")
            pair.stalled = self._mode == "stall"
            self._pairs.add(pair)
            self._update(pair)

    def _hang_pair(self, pair: _Pair) -> None:
        pair.hung = True
        pair.c2u.clear()
        pair.u2c.clear()
        if pair.upstream is not None and pair.connecting:
            self._close_upstream(pair)
        self._update(pair)

    def _close_upstream(self, pair: _Pair) -> None:
        if pair.upstream is not None:
            self._forget(pair.upstream)
            pair.upstream.close()
            pair.upstream = None

    def _close_pair(self, pair: _Pair, *, reset: bool = False) -> None:
        if pair.closed:
            return
        pair.closed = True
        self._pairs.discard(pair)
        self._forget(pair.client)
        if reset:
            _abort(pair.client)
        else:
            pair.client.close()
        self._close_upstream(pair)

    def _set_interest(self, sock: socket.socket, events: int, pair: _Pair, side: str) -> None:
        assert self._selector is not None
        try:
            key = self._selector.get_key(sock)
        except KeyError:
            if events:
                self._selector.register(sock, events, (side, pair))
            return
        if not events:
            self._selector.unregister(sock)
        elif key.events != events:
            self._selector.modify(sock, events, (side, pair))

    def _update(self, pair: _Pair) -> None:
        """Recompute what to wait for on both sockets; finish half-closes; close when done."""
        if pair.closed:
            return
        if pair.stalled:
            self._set_interest(pair.client, 0, pair, "client")
            if pair.upstream is not None:
                self._set_interest(pair.upstream, 0, pair, "upstream")
            return
        if not pair.hung:
            upstream = pair.upstream
            client_done = pair.client_eof and not pair.c2u
            if client_done and upstream is not None and not pair.connecting and not pair.upstream_wr_shut:
                pair.upstream_wr_shut = True
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_WR)
            if pair.upstream_eof and not pair.u2c and not pair.client_wr_shut:
                pair.client_wr_shut = True
                with contextlib.suppress(OSError):
                    pair.client.shutdown(socket.SHUT_WR)
            if pair.client_wr_shut and (pair.upstream_wr_shut or pair.upstream is None):
                self._close_pair(pair)
                return
            if pair.client_eof and pair.upstream is None:
                self._close_pair(pair)
                return

        read, write = selectors.EVENT_READ, selectors.EVENT_WRITE
        client_events = 0
        if not pair.client_eof and (pair.hung or len(pair.c2u) < _BUFFER_LIMIT):
            client_events |= read
        if not pair.hung and pair.u2c:
            client_events |= write
        self._set_interest(pair.client, client_events, pair, "client")

        if pair.upstream is not None:
            upstream_events = 0
            if pair.connecting:
                upstream_events = write
            else:
                if not pair.upstream_eof and (pair.hung or len(pair.u2c) < _BUFFER_LIMIT):
                    upstream_events |= read
                if not pair.hung and pair.c2u:
                    upstream_events |= write
            self._set_interest(pair.upstream, upstream_events, pair, "upstream")

    def _on_client(self, pair: _Pair, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            try:
                data = pair.client.recv(_CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._close_pair(pair)
                return
            if data is not None:
                if not data:
                    pair.client_eof = True
                    if pair.hung:
                        self._close_pair(pair)
                        return
                elif not pair.hung:
                    pair.c2u += data
        if mask & selectors.EVENT_WRITE and not pair.closed and pair.u2c and not pair.hung:
            try:
                sent = pair.client.send(pair.u2c)
                del pair.u2c[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._close_pair(pair)
                return
        self._update(pair)

    def _on_upstream(self, pair: _Pair, mask: int) -> None:
        upstream = pair.upstream
        if upstream is None:
            return
        if pair.connecting:
            if mask & selectors.EVENT_WRITE:
                err = upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._close_pair(pair)  # target refused/unreachable: the client sees EOF
                    return
                pair.connecting = False
            self._update(pair)
            return
        if mask & selectors.EVENT_READ:
            try:
                data = upstream.recv(_CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                if pair.hung:
                    self._close_upstream(pair)
                    self._update(pair)
                else:
                    self._close_pair(pair)
                return
            if data is not None:
                if not data:
                    pair.upstream_eof = True
                    if pair.hung:
                        self._close_upstream(pair)  # keep the client hanging
                        self._update(pair)
                        return
                elif not pair.hung:
                    pair.u2c += data
        if mask & selectors.EVENT_WRITE and pair.c2u and not pair.hung:
            try:
                sent = upstream.send(pair.c2u)
                del pair.c2u[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._close_pair(pair)
                return
        self._update(pair)

    def _loop(self) -> None:
        selector = self._selector
        assert selector is not None
        try:
            while self._running:
                for key, mask in selector.select():
                    kind, pair = key.data
                    if kind == "wake":
                        self._run_commands()
                    elif kind == "listen":
                        if self._listener is not None and key.fileobj is self._listener:
                            self._accept()
                    elif pair is not None and not pair.closed:
                        if kind == "client" and key.fileobj is pair.client:
                            self._on_client(pair, mask)
                        elif key.fileobj is pair.upstream:
                            self._on_upstream(pair, mask)
                    if not self._running:
                        break
        finally:
            for pair in list(self._pairs):
                self._close_pair(pair)
            self._close_listener()
            self._selector = None
            selector.close()
            # Answer commands that raced with the shutdown so no caller waits forever.
            self._run_commands()
            for sock in (self._wake_r, self._wake_w):
                if sock is not None:
                    sock.close()
            self._wake_r = self._wake_w = None


def _nodelay(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _abort(sock: socket.socket) -> None:
    """Close with RST instead of FIN, like a server that vanished."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
