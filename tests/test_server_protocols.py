"""One ``send`` per answer: what uvicorn writes within one step of the loop leaves together."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from caffezoo.server.protocols import OneSendPerStep


class Recording(asyncio.Transport):
    """The transport's side: what it was handed, one entry per call."""

    def __init__(self):
        super().__init__()
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data):
        self.sent.append(bytes(data))

    def writelines(self, chunks):
        self.sent.append(b"".join(chunks))

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def get_write_buffer_size(self):
        return 0

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 8000) if name == "sockname" else default


def test_a_head_and_body_written_in_one_step_leave_in_one_call():
    async def main():
        t = Recording()
        w = OneSendPerStep(t)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
        w.write(b"")
        w.writelines([b"bo", b"dy"])
        assert t.sent == [] and w.get_write_buffer_size() == 42
        await asyncio.sleep(0)  # the step ends
        assert t.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody"]
        assert w.get_write_buffer_size() == 0
        w.write(b"last words")
        w.close()  # what was written goes first
        assert t.sent[-1] == b"last words" and t.closed
        w.write(b"too late")
        await asyncio.sleep(0)
        assert t.sent[-1] == b"last words"  # nothing is handed to a closing transport
        assert w.get_extra_info("sockname") == ("127.0.0.1", 8000)  # the rest is the transport's

    asyncio.run(main())


PROBE_WITH_FEW_DESCRIPTORS = """
import os, resource
from caffezoo.server import splice

resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
baseline = len(os.listdir("/proc/self/fd")) - 1  # listdir's own descriptor
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
answers = []
for spare in range(8):  # fails at the first pair, the second pair, the pipe... then works
    for fd in held[len(held) - spare :]:
        os.close(fd)
    del held[len(held) - spare :]
    answers.append(splice._works())
    held += [os.open("/dev/null", os.O_RDONLY) for _ in range(spare)]
for fd in held:
    os.close(fd)
print(*answers, len(os.listdir("/proc/self/fd")) - 1 == baseline)
"""


def test_the_splice_probe_says_no_when_it_cannot_open_its_sockets_or_pipe():
    """A process out of descriptors (or a sandbox refusing socketpair) streams: the probe at
    import must answer False, not raise out of ``import caffezoo.server``, and close what it opened."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE_WITH_FEW_DESCRIPTORS], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    *answers, closed = out.stdout.split()
    assert answers == ["False"] * 6 + ["True"] * 2 and closed == "True"
