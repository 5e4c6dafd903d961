"""BYTES framing cost per element: the server's decode/encode beside tritonclient's own (the reference), one run.

Why: BYTES framing is sequential, so decoding runs a Python loop on the thread that decodes a request (the event
loop, or a front connection's reader); this says what a batch of text costs there, side by side with the client
library's implementation of the same format, so the ratio holds on a noisy shared machine.

    python bench/bytes_codec.py                 # 1 and 100,000 elements of a 20-byte sentence, and empty strings
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor  # noqa: E402

from server.codec import bytes_tensor  # noqa: E402


def per_element_ns(call: Callable[[], object], count: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e9 / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"{'elements':>9} {'bytes each':>10} {'decode ns/el':>13} {'tritonclient':>13} {'ratio':>6} "
          f"{'encode ns/el':>13} {'tritonclient':>13} {'ratio':>6}")
    for count, element in [(1, b"a sentence of text.."), (100_000, b"a sentence of text.."), (100_000, b"")]:
        row(count, element, args.repeats)


def row(count: int, element: bytes, repeats: int) -> None:
    values = np.array([element] * count, dtype=object)
    framed = bytes_tensor.serialize(values)
    view = memoryview(bytearray(framed))  # what the HTTP path hands the decoder
    ours = per_element_ns(lambda: bytes_tensor.deserialize(view, count, "x"), count, repeats)
    theirs = per_element_ns(lambda: deserialize_bytes_tensor(framed), count, repeats)
    ours_out = per_element_ns(lambda: bytes_tensor.serialize(values), count, repeats)
    theirs_out = per_element_ns(lambda: serialize_byte_tensor(values), count, repeats)
    print(f"{count:>9} {len(element):>10} {ours:>13.0f} {theirs:>13.0f} {ours / theirs:>6.2f} "
          f"{ours_out:>13.0f} {theirs_out:>13.0f} {ours_out / theirs_out:>6.2f}")

if __name__ == "__main__":
    main()
