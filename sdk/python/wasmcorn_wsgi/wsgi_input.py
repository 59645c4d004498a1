"""`wsgi.input`: a read-only binary file object that streams the request body from the host.

It asks the host for the body in bounded pieces, never for more than `CONTENT_LENGTH` says, and keeps at most
one piece (or one line being looked for) in memory; `read()` with no size reads the rest of the body.
"""

import io

# The most bytes asked of the host at once.
PIECE = 64 * 1024


class WsgiInput(io.RawIOBase):
    """The request body. `read_body(max)` is the host's call: up to `max` bytes, `b""` at the end."""

    def __init__(self, read_body, content_length=None):
        super().__init__()
        self._read_body = read_body
        # Bytes still to ask the host for; None when the length is unknown (the host ends the body).
        self._left = content_length
        self._buffer = bytearray()
        self._eof = content_length == 0

    def readable(self):
        return True

    def _fill(self, want):
        """Adds one piece (at most `want` bytes, at least one unless at the end) to the buffer; False at the end."""
        if self._eof:
            return False
        ask = max(1, min(want, PIECE * 16)) if want > 0 else PIECE
        if self._left is not None:
            ask = min(ask, self._left)
        data = self._read_body(ask) if ask > 0 else b""
        if not data:
            self._eof = True
            return False
        if self._left is not None:
            data = data[: self._left]
            self._left -= len(data)
            if self._left == 0:
                self._eof = True
        self._buffer += data
        return True

    def _take(self, count):
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def read(self, size=-1):
        if size is None or size < 0:
            return self.readall()
        while len(self._buffer) < size and self._fill(size - len(self._buffer)):
            pass
        return self._take(min(size, len(self._buffer)))

    def readall(self):
        while self._fill(PIECE):
            pass
        return self._take(len(self._buffer))

    def readinto(self, target):
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)

    def readline(self, size=-1):
        limit = size if size is not None and size >= 0 else None
        searched = 0
        while True:
            end = self._buffer.find(b"\n", searched)
            if end >= 0:
                count = end + 1
                break
            searched = len(self._buffer)
            if limit is not None and searched >= limit:
                count = limit
                break
            if not self._fill(PIECE):
                count = len(self._buffer)
                break
        if limit is not None:
            count = min(count, limit)
        return self._take(count)

    def readlines(self, hint=-1):
        lines = []
        total = 0
        for line in self:
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line
