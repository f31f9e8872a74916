# The part of the cross toolchain files that is the same for every target: Debian's cross
# compilers for PA_TARGET_TRIPLET and the target's libraries, found in one of two places:
#  - by default the Debian multiarch packages installed beside the native ones
#    (apt-get install libmosquitto-dev:arm64 ...), in /usr/lib/<triplet>;
#  - with -DPA_SYSROOT=<folder>, a root folder holding the target's /usr/include and /usr/lib,
#    e.g. one unpacked from Raspberry Pi OS (its armhf libraries, start-up files and libgcc are
#    ARMv6, Debian's are ARMv7) or the one scripts/cross.sh unpacks when multiarch cannot be used.
# Tests run under qemu-user through CMAKE_CROSSCOMPILING_EMULATOR (ctest, gtest_discover_tests
# and the integration harness's PA_AGENT_EMULATOR all use it).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_C_COMPILER ${PA_TARGET_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${PA_TARGET_TRIPLET}-g++)
set(CMAKE_LIBRARY_ARCHITECTURE ${PA_TARGET_TRIPLET})
# Debian's multiarch library folder, which GNUInstallDirs picks natively but not when
# cross-compiling: the package's plugins are in /usr/lib/<triplet>/provision-agent/plugins on
# every architecture.
set(CMAKE_INSTALL_LIBDIR lib/${PA_TARGET_TRIPLET} CACHE PATH "Object code libraries")
set(PA_SYSROOT "" CACHE PATH "Target root folder; empty: Debian multiarch packages")
set(PA_QEMU_CPU "" CACHE STRING "qemu-user -cpu for the tests, e.g. arm1176 (Pi Zero/1)")
# try_compile projects read this file again and need the same answers.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES PA_TARGET_TRIPLET PA_QEMU PA_SYSROOT PA_QEMU_CPU)

if(PA_SYSROOT)
  set(CMAKE_SYSROOT ${PA_SYSROOT})
  set(CMAKE_FIND_ROOT_PATH ${PA_SYSROOT})
  set(pa_target_root ${PA_SYSROOT})
  # Start-up files and libgcc from the root too, not the cross compiler's own (ARMv7 on armhf).
  execute_process(COMMAND ${CMAKE_C_COMPILER} -dumpversion
                  OUTPUT_VARIABLE pa_gcc_major OUTPUT_STRIP_TRAILING_WHITESPACE)
  set(pa_link_flags "-B${PA_SYSROOT}/usr/lib/gcc/${PA_TARGET_TRIPLET}/${pa_gcc_major}")
  string(APPEND pa_link_flags " -B${PA_SYSROOT}/usr/lib/${PA_TARGET_TRIPLET}")
  set(CMAKE_EXE_LINKER_FLAGS_INIT ${pa_link_flags})
  set(CMAKE_SHARED_LINKER_FLAGS_INIT ${pa_link_flags})
  set(CMAKE_MODULE_LINKER_FLAGS_INIT ${pa_link_flags})
  set(ENV{PKG_CONFIG_SYSROOT_DIR} ${PA_SYSROOT})
  set(pa_emulator_root ${PA_SYSROOT})
else()
  set(CMAKE_FIND_ROOT_PATH /usr/${PA_TARGET_TRIPLET} /)
  set(pa_target_root "")
  # The loader and libc of the multiarch libc6:<arch> that the libraries were installed with.
  # (-L /usr/<triplet> would pair the cross package's ld.so with that libc.so.6 through the ld.so
  # cache, and fork() then hangs in the child under qemu 7.2.)
  set(pa_emulator_root /)
endif()
# Programs are the build machine's; everything linked into the target comes from the target's
# folders only.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# pkg-config answers for the target: its .pc files only, never the native ones.
set(pa_pkg_config_libdir "${pa_target_root}/usr/lib/${PA_TARGET_TRIPLET}/pkgconfig")
set(ENV{PKG_CONFIG_LIBDIR} "${pa_pkg_config_libdir}:${pa_target_root}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# A full path: the integration harness execs it with a clean environment (no PATH).
find_program(PA_QEMU_PROGRAM ${PA_QEMU} NO_CMAKE_FIND_ROOT_PATH)
if(NOT PA_QEMU_PROGRAM)
  set(PA_QEMU_PROGRAM /usr/bin/${PA_QEMU})  # not installed yet: where Debian's qemu-user puts it
endif()
set(CMAKE_CROSSCOMPILING_EMULATOR ${PA_QEMU_PROGRAM} -L ${pa_emulator_root})
if(PA_QEMU_CPU)
  list(APPEND CMAKE_CROSSCOMPILING_EMULATOR -cpu ${PA_QEMU_CPU})
endif()
