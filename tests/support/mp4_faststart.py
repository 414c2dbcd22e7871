"""Rewrite an MP4 whose `moov` box follows `mdat` (what OpenCV writes) as a faststart MP4 (`moov` first, chunk
offsets shifted): a truncated copy then still announces every frame, as a cut-off download or recording does."""
from __future__ import annotations

import struct
from collections.abc import Iterator


def boxes(data: bytes | bytearray, start: int, end: int) -> Iterator[tuple[str, int, int, int]]:
    """(type, offset, header size, size) of the boxes in data[start:end]."""
    i = start
    while i < end:
        size, typ = struct.unpack(">I4s", data[i:i + 8])
        hdr = 8
        if size == 1:
            size = struct.unpack(">Q", data[i + 8:i + 16])[0]
            hdr = 16
        elif size == 0:
            size = end - i
        yield typ.decode("latin1"), i, hdr, size
        i += size

def faststart(data: bytes) -> bytes:
    """The same movie with `moov` before `mdat` (stco/co64 chunk offsets moved by moov's size)."""
    top = list(boxes(data, 0, len(data)))
    moov = next(b for b in top if b[0] == "moov")
    mdat = next(b for b in top if b[0] == "mdat")
    assert moov[1] > mdat[1]
    m = bytearray(data[moov[1]:moov[1] + moov[3]])
    shift = moov[3]
    def patch(buf: bytearray, start: int, end: int) -> None:
        for typ, i, hdr, size in boxes(buf, start, end):
            if typ in ("trak", "mdia", "minf", "stbl"):
                patch(buf, i + hdr, i + size)
            elif typ == "stco":
                n = struct.unpack(">I", buf[i + 12:i + 16])[0]
                for k in range(n):
                    o = i + 16 + 4 * k
                    buf[o:o + 4] = struct.pack(">I", struct.unpack(">I", buf[o:o + 4])[0] + shift)
            elif typ == "co64":
                n = struct.unpack(">I", buf[i + 12:i + 16])[0]
                for k in range(n):
                    o = i + 16 + 8 * k
                    buf[o:o + 8] = struct.pack(">Q", struct.unpack(">Q", buf[o:o + 8])[0] + shift)
    patch(m, 8, len(m))
    out = b""
    for typ, i, hdr, size in top:
        if typ == "moov":
            continue
        if typ == "mdat":
            out += bytes(m)
        out += data[i:i + size]
    return out
