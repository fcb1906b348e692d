# CMake toolchain file: cross-builds uplinkd's tests for arm64 with Debian's aarch64-linux-gnu gcc
# against the arm64 root that vmtest/arm64/mkroot makes (it is both the guest's root and the
# sysroot, so the binaries link against exactly the libraries they run with).
#
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=vmtest/arm64/toolchain.cmake \
#         -DUPLINKD_ARM64_SYSROOT=/path/to/root
#
# The BPF objects are built by the host's clang (-target bpf) and bpftool as usual: they do not
# depend on the CPU that loads them.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

if(NOT UPLINKD_ARM64_SYSROOT AND DEFINED ENV{UPLINKD_ARM64_SYSROOT})
  set(UPLINKD_ARM64_SYSROOT $ENV{UPLINKD_ARM64_SYSROOT})
endif()
if(NOT UPLINKD_ARM64_SYSROOT OR NOT EXISTS ${UPLINKD_ARM64_SYSROOT}/usr/include/stdio.h)
  message(FATAL_ERROR "UPLINKD_ARM64_SYSROOT='${UPLINKD_ARM64_SYSROOT}' is not an arm64 root with "
                      "headers; make one with vmtest/arm64/mkroot (vmtest/run --arch arm64 does)")
endif()
# try_compile projects see only the variables listed here.
set(CMAKE_TRY_COMPILE_PLATFORM_VARIABLES UPLINKD_ARM64_SYSROOT)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_SYSROOT ${UPLINKD_ARM64_SYSROOT})
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

# Libraries, headers and CMake packages only from the sysroot; programs (clang, bpftool) from
# the host.
set(CMAKE_FIND_ROOT_PATH ${UPLINKD_ARM64_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

set(ENV{PKG_CONFIG_SYSROOT_DIR} ${UPLINKD_ARM64_SYSROOT})
set(ENV{PKG_CONFIG_LIBDIR}
    "${UPLINKD_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu/pkgconfig:${UPLINKD_ARM64_SYSROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# The linker resolves the libraries' own dependencies (libelf, libz of libbpf) in the sysroot.
set(_uplinkd_rpath_link
    "-Wl,-rpath-link,${UPLINKD_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu -Wl,-rpath-link,${UPLINKD_ARM64_SYSROOT}/lib/aarch64-linux-gnu")
set(CMAKE_EXE_LINKER_FLAGS_INIT "${_uplinkd_rpath_link}")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "${_uplinkd_rpath_link}")

# gtest_discover_tests would run each test binary right after linking it, which an x86_64 host
# cannot: list the tests when ctest runs instead (in the arm64 guest, if ever).
set(CMAKE_GTEST_DISCOVER_TESTS_DISCOVERY_MODE PRE_TEST)
