"""tinycore's kernel modules compiled for x86-64-v3 (AVX2, FMA, BMI2).

The same sources as ``tinycore._activations`` and its siblings, built with
``-march=x86-64-v3``.  Never import them directly: ``tinycore._simd`` does,
and only on a CPU that reports every feature of that level.
"""
