# 32-bit Raspberry Pi OS (bookworm, armhf): every Pi, the Pi Zero and Pi 1 (ARMv6) included.
# Needs g++-arm-linux-gnueabihf, qemu-user and the :armhf -dev packages; scripts/cross.sh armhf
# installs them and builds, tests and packages with this file.
set(CMAKE_SYSTEM_PROCESSOR arm)
set(PA_TARGET_TRIPLET arm-linux-gnueabihf)
set(PA_QEMU qemu-arm)
# Debian's compiler targets ARMv7 Thumb-2, which faults on the Pi Zero/1's ARM1176 (ARMv6);
# Raspberry Pi OS's armhf is ARMv6 with VFPv2, hard-float. The project's own code is built for
# that baseline (readelf -A: Tag_CPU_arch: v6, Tag_FP_arch: VFPv2, Tag_ABI_VFP_args: VFP registers).
# -Wno-psabi: the notes that GCC 7.1 changed how some types are passed on ARM concern only code
# mixed with objects from older compilers; bookworm and Raspberry Pi OS are built with GCC 12.
# _FILE_OFFSET_BITS=64: 32-bit stat() and readdir() fail with EOVERFLOW on 64-bit inode numbers
# and sizes (large or network file systems on a Pi, the build machine's under qemu).
set(pa_armhf_flags "-march=armv6+fp -mfpu=vfp -mfloat-abi=hard -marm")
string(APPEND pa_armhf_flags " -Wno-psabi -D_FILE_OFFSET_BITS=64")
set(CMAKE_C_FLAGS_INIT ${pa_armhf_flags})
set(CMAKE_CXX_FLAGS_INIT ${pa_armhf_flags})
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
