"""The x86-64 level of the CPU that runs this process, asked of the CPU (CPUID).

/proc/cpuinfo describes the host's processor, which is not always the one
that executes the code: under an emulator (``qemu-x86_64 -cpu Nehalem``) it
still lists the host's AVX2, and loading AVX2 code there stops the process
with "illegal instruction".  CPUID, through the compiler's
``__builtin_cpu_supports``, answers for the CPU actually running, and libgcc
counts AVX and AVX-512 only when the operating system saves their registers
(XGETBV).  This module is compiled for the baseline alone (setup.py), so it
can be imported on any x86-64 CPU before a wider set is chosen.
"""

cdef extern from *:
    """
    #if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    static int tinycore_x86_64_level(void)
    {
        __builtin_cpu_init();
    #if !defined(__clang__) && __GNUC__ >= 12
        /* GCC 12 knows the levels and checks every feature of each. */
        if (__builtin_cpu_supports("x86-64-v4")) return 4;
        if (__builtin_cpu_supports("x86-64-v3")) return 3;
        if (__builtin_cpu_supports("x86-64-v2")) return 2;
        return 1;
    #else
        /* Older compilers: the features the levels are known by (every
           CPU with AVX2, FMA and BMI2 also has F16C, LZCNT and MOVBE). */
        int v2 = __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("popcnt");
        int v3 = v2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                 && __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
        int v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
                 && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq")
                 && __builtin_cpu_supports("avx512vl");
        return v4 ? 4 : v3 ? 3 : v2 ? 2 : 1;
    #endif
    }
    #else
    static int tinycore_x86_64_level(void) { return -1; }  /* not x86, or no GCC/Clang */
    #endif
    """
    int tinycore_x86_64_level() noexcept nogil


def x86_64_level():
    """The x86-64 micro-architecture level the running CPU supports, by CPUID.

    Returns
    -------
    int
        1 (x86-64: SSE2), 2 (x86-64-v2: SSE4.2, POPCNT), 3 (x86-64-v3: AVX2,
        FMA, BMI2) or 4 (x86-64-v4: AVX-512 F, BW, CD, DQ, VL); -1 when this
        build cannot ask (not x86, or a compiler without
        ``__builtin_cpu_supports``).
    """
    return tinycore_x86_64_level()
