"""tinycore's kernel modules compiled for x86-64-v4 (AVX-512 F, BW, CD, DQ, VL).

The same sources as ``tinycore._activations`` and its siblings, built with
``-march=x86-64-v4`` and 512-bit vectors.  Never import them directly:
``tinycore._simd`` does, and only on a CPU that reports every feature of
that level.
"""
