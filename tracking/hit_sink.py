"""The hit writer process: reads batches of hits from stdin, writes them, acknowledges each.

Run by ``HitPipe`` as ``python -m tracking.hit_sink``, so that parsing rows
and talking to the store take none of the tracking listener's CPU.  The
first line on stdin is the store to open (JSON, so a password in the URL is
never on a command line); then each batch is a header line ``<key> <hits> <bytes>``
followed by that many bytes of the hits (``HitRow`` tuples) in ``marshal``'s
format, written here (``write_hits``): the counters summed per recipient and
the driver's work take this process's CPU, not the listener's.
After a batch is committed its key goes back on stdout.  A store that is away
is retried with backoff; the batch is never skipped.  End of input ends the
process once everything read is written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import marshal
import os
import sys

from sqlalchemy.exc import SQLAlchemyError

from store.engine import make_engine, make_sessionmaker
from tracking.hits import write_hits

log = logging.getLogger("tracking.hit_sink")
RETRY_FIRST_S = 0.2
RETRY_MOST_S = 10.0


async def _stdin() -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=2**26)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    return reader


async def sink() -> None:
    reader = await _stdin()
    hello = json.loads(await reader.readline())
    engine = make_engine(hello["url"])
    sessions = make_sessionmaker(engine)
    out = sys.stdout.buffer
    try:
        while header := await reader.readline():
            key, count, size = header.decode("ascii").split()
            # stdin is a pipe from the listener that started this process, nothing else.
            batch = marshal.loads(await reader.readexactly(int(size)))  # noqa: S302
            delay = RETRY_FIRST_S
            while True:
                try:
                    await write_hits(sessions, batch, key)
                    break
                except SQLAlchemyError as err:
                    log.warning("%s tracking hits not written yet: %s", count, err)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MOST_S)
            out.write(f"{key}\n".encode("ascii"))
            out.flush()
    finally:
        await engine.dispose()


def main() -> None:
    os.nice(10)  # background work: the listener answering the pixel comes first
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(sink())


if __name__ == "__main__":
    main()
