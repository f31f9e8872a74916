# 32-bit Raspberry Pi OS (bookworm, armhf): every Pi, the Pi Zero and Pi 1 (ARMv6) included.
# Needs g++-arm-linux-gnueabihf, qemu-user and the :armhf -dev packages; scripts/cross.sh armhf
# installs them and builds, tests and packages with this file.
set(CMAKE_SYSTEM_PROCESSOR arm)
set(PA_TARGET_TRIPLET arm-linux-gnueabihf)
set(PA_QEMU qemu-arm)
# Debian's compiler targets ARMv7 Thumb-2, which faults on the Pi Zero/1's ARM1176 (ARMv6);
# Raspberry Pi OS's armhf is ARMv6 with VFPv2, hard-float. The project's own code is built for
# that baseline (readelf -A: Tag_CPU_arch: v6, Tag_FP_arch: VFPv2, Tag_ABI_VFP_args: VFP registers).
set(CMAKE_C_FLAGS_INIT "-march=armv6+fp -mfpu=vfp -mfloat-abi=hard -marm")
set(CMAKE_CXX_FLAGS_INIT "-march=armv6+fp -mfpu=vfp -mfloat-abi=hard -marm")
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
