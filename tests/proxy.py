"""A small TCP proxy for fault tests: it can cut, delay, throttle and swallow replies.

It runs its own asyncio loop in a thread, so that tests driving real processes can change
its behaviour between (or during) requests. It counts the bytes in both directions.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from dataclasses import dataclass


@dataclass
class Faults:
    down: bool = False  # refuse and cut every connection
    delay: float = 0.0  # seconds added to every chunk in each direction (half a round trip)
    rate: float = 0.0  # bytes per second in each direction; 0: no limit
    cut_every: int = 0  # cut the connection in flight each time this many bytes went through
    cut_up_after: int = 0  # cut a connection after this many request bytes (then reset to 0)
    swallow_replies: bool = False  # forward requests, drop the answers and cut


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.faults = Faults()
        self.up = 0
        self.down = 0
        self._since_cut = 0
        self.cuts = 0
        self.loop = asyncio.new_event_loop()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        self._sock = sock
        self._ready = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self._server = await asyncio.start_server(self._handle, sock=self._sock)
            self._ready.set()
            async with self._server:
                await self._server.serve_forever()

        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            self.loop.run_until_complete(main())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset_counters(self) -> None:
        self.up = self.down = 0

    def cut_all(self) -> None:
        """Cut every open connection now."""
        def _cut() -> None:
            for w in list(self._writers):
                w.transport.abort()
        self.loop.call_soon_threadsafe(_cut)

    def close(self) -> None:
        def _stop() -> None:
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
        self.loop.call_soon_threadsafe(_stop)
        self._thread.join(5)
        assert not self._thread.is_alive(), "the proxy did not stop"
        self.loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.faults.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        sent_up = 0

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upward: bool) -> None:
            # A reader stamps each chunk with its arrival; the writer sends it ``delay`` later and no
            # faster than ``rate``: latency and bandwidth as on a real link, pipelined.
            nonlocal sent_up
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

            async def read() -> None:
                try:
                    while True:
                        chunk = await src.read(16384)
                        queue.put_nowait((loop.time(), chunk))
                        if not chunk:
                            return
                except (ConnectionError, OSError):
                    queue.put_nowait((loop.time(), b""))

            reading = asyncio.ensure_future(read())
            next_free = 0.0
            try:
                while True:
                    arrived, chunk = await queue.get()
                    if not chunk:
                        break
                    f = self.faults
                    if f.down:
                        raise ConnectionResetError
                    wait = arrived + f.delay - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    if f.rate:
                        next_free = max(loop.time(), next_free) + len(chunk) / f.rate
                        await asyncio.sleep(next_free - loop.time())
                    if upward:
                        self.up += len(chunk)
                        sent_up += len(chunk)
                        if f.cut_up_after and sent_up >= f.cut_up_after:
                            dst.write(chunk[: max(0, len(chunk) - (sent_up - f.cut_up_after))])
                            await dst.drain()
                            raise ConnectionResetError
                    else:
                        if f.swallow_replies:
                            raise ConnectionResetError
                        self.down += len(chunk)
                    if f.cut_every:
                        self._since_cut += len(chunk)
                        if self._since_cut >= f.cut_every:
                            self._since_cut = 0
                            self.cuts += 1
                            raise ConnectionResetError
                    dst.write(chunk)
                    await dst.drain()
            except (ConnectionError, OSError, asyncio.CancelledError):
                pass
            finally:
                reading.cancel()
                for w in (writer, up_writer):
                    w.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        self._writers.discard(writer)
        self._writers.discard(up_writer)
