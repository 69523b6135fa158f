"""Reading mail in worker processes: the same reading as in-process, and a dead worker is survived."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from scanner.reading import MailReader
from store.blobs import BlobStore

RAW = (
    "From: =?gb2312?B?1cXOsA==?= <zhang.wei@huaxin.cn>\r\nTo: sales@rapport.test\r\n"
    "Subject: =?gb2312?B?0a+82w==?=\r\nMessage-ID: <r1@huaxin.cn>\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    "请报价\r\n--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=q.pdf\r\n"
    "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n--B--\r\n"
).encode()


async def test_workers_read_what_a_thread_reads_and_survive_a_killed_worker(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    digest = blobs.write_blocking(RAW)
    in_thread = await MailReader(tmp_path, workers=0).read(digest)
    reader = MailReader(tmp_path, workers=1)
    try:
        await reader.start()
        in_worker = await reader.read(digest)
        assert in_worker.mail.subject == in_thread.mail.subject == "询价"
        assert in_worker.mail.from_name == "张伟"
        assert in_worker.verdict == in_thread.verdict
        assert in_worker.attachments == in_thread.attachments
        (attachment,) = in_worker.attachments
        assert blobs.read_blocking(attachment.digest) == b"%PDF-1.4"
        # The attachment's bytes stay in the blob store; only its name crosses over.
        assert in_worker.mail.attachments[0].filename == "q.pdf"
        assert in_worker.mail.attachments[0].payload == b""

        pool = reader._pool
        assert pool is not None
        for pid in list(pool._processes):  # the test kills the worker on purpose
            os.kill(pid, signal.SIGKILL)
        again = await reader.read(digest)
        assert again.mail.subject == "询价"
        assert reader._pool is not pool  # a fresh pool took over
    finally:
        reader.close()
