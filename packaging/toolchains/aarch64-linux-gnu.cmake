# 64-bit Raspberry Pi OS (bookworm, arm64): Pi 3, 4, 5, 400, Zero 2 W, CM3/CM4/CM5.
# Needs g++-aarch64-linux-gnu, qemu-user and the :arm64 -dev packages; scripts/cross.sh arm64
# installs them and builds, tests and packages with this file.
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(PA_TARGET_TRIPLET aarch64-linux-gnu)
set(PA_QEMU qemu-aarch64)
include(${CMAKE_CURRENT_LIST_DIR}/debian-cross.cmake)
