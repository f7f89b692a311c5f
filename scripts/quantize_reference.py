#!/usr/bin/env python3
"""Reference quantizations of one fp32 array, for test/quantize.test.ts: the `gguf` Python package's
quantizers (gguf.quants: Q8_0, Q4_0, Q5_0) and, when given llama.cpp's libggml-base shared library
(node-llama-cpp ships it), ggml's own quantize_row_*_ref for Q8_0, Q4_0, Q5_0 and Q4_K.

Usage: python3 scripts/quantize_reference.py VALUES.f32 OUT_DIR [LIBGGML_BASE.so]
VALUES.f32 holds little-endian float32s, a multiple of 256. Writes OUT_DIR/gguf-TYPE.bin and
OUT_DIR/ggml-TYPE.bin.
"""
import ctypes
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, quants

GGUF_TYPES = ["Q8_0", "Q4_0", "Q5_0"]
GGML_TYPES = {"Q8_0": 34 / 32, "Q4_0": 18 / 32, "Q5_0": 22 / 32, "Q4_K": 144 / 256}


def main() -> None:
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    values = np.fromfile(sys.argv[1], dtype="<f4")
    out = Path(sys.argv[2])
    for name in GGUF_TYPES:
        data = quants.quantize(values.reshape(-1, 256), GGMLQuantizationType[name])
        (out / f"gguf-{name}.bin").write_bytes(data.tobytes())
    if len(sys.argv) == 4:
        lib = ctypes.CDLL(sys.argv[3])
        source = np.ascontiguousarray(values, dtype=np.float32)
        for name, bytes_per_value in GGML_TYPES.items():
            target = np.zeros(int(len(values) * bytes_per_value), dtype=np.uint8)
            function = getattr(lib, f"quantize_row_{name.lower().replace('_k', '_K')}_ref")
            function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            function.restype = None
            function(source.ctypes.data, target.ctypes.data, len(values))
            (out / f"ggml-{name}.bin").write_bytes(target.tobytes())


if __name__ == "__main__":
    main()
