# vcpkg overlay port for grpo, building from this source tree (the repository that holds the port):
#   vcpkg install grpo --overlay-ports=<grpo>/cmake/vcpkg/ports [--x-feature=torch|cuda|hf]
# Header-only: one release configuration, no libraries; the package's own CMake config already
# installs to share/grpo, where vcpkg expects it.
set(VCPKG_BUILD_TYPE release)
get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../../../.." ABSOLUTE)

vcpkg_check_features(OUT_FEATURE_OPTIONS feature_options
  FEATURES
    torch GRPO_WITH_TORCH
    cuda  GRPO_WITH_CUDA
    hf    GRPO_WITH_HF)

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    -DGRPO_BUILD_TESTS=OFF
    -DGRPO_BUILD_CLI=OFF
    -DGRPO_BUILD_EXAMPLES=OFF
    ${feature_options})
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(PACKAGE_NAME grpo CONFIG_PATH share/grpo)
file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/lib" "${CURRENT_PACKAGES_DIR}/debug")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
