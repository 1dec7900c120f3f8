# What the grpo::nccl component needs: the CUDA runtime (CUDA::cudart from find_package(CUDAToolkit)) and NCCL 2.14 or
# later (nccl.h and libnccl), as the imported target grpo::nccl_library that grpo::nccl links. Building needs neither
# a GPU nor a CUDA compiler. NCCL is searched under NCCL_HOME, then beside a pip LibTorch found through Torch_DIR (the
# nvidia-nccl wheel, site-packages/nvidia/nccl), then beside the CUDA toolkit (/usr/local/cuda). A process has one
# libnccl.so.2: next to a CUDA LibTorch it must be the NCCL that LibTorch was built with (torch 2.15's libtorch_cuda
# needs symbols that the toolkit's NCCL 2.28 lacks), hence the wheel first. Included by the build tree and, once
# installed, by grpo-config.cmake before grpo-nccl-targets.cmake; when either is missing it sets grpo_nccl_FOUND FALSE
# and grpo_NOT_FOUND_MESSAGE naming it. GRPO_NCCL_INCLUDE_DIR and GRPO_NCCL_LIBRARY override the search.
if(TARGET grpo::nccl_library)
  return()
endif()
find_package(CUDAToolkit QUIET)
find_path(GRPO_NCCL_INCLUDE_DIR
  NAMES nccl.h
  HINTS ENV NCCL_HOME ${Torch_DIR}/../../../../nvidia/nccl ${CUDAToolkit_INCLUDE_DIRS} ENV CUDA_HOME ENV CUDA_PATH
        /usr/local/cuda
  PATH_SUFFIXES include
  DOC "Directory holding nccl.h (NCCL 2.14 or later)")
find_library(GRPO_NCCL_LIBRARY
  NAMES nccl libnccl.so.2
  NAMES_PER_DIR
  HINTS ENV NCCL_HOME ${Torch_DIR}/../../../../nvidia/nccl ${CUDAToolkit_LIBRARY_DIR} ENV CUDA_HOME ENV CUDA_PATH
        /usr/local/cuda
  PATH_SUFFIXES lib64 lib
  DOC "The NCCL library (libnccl.so)")

set(_grpo_nccl_version "")
if(GRPO_NCCL_INCLUDE_DIR AND EXISTS "${GRPO_NCCL_INCLUDE_DIR}/nccl.h")
  file(STRINGS "${GRPO_NCCL_INCLUDE_DIR}/nccl.h" _grpo_nccl_version_lines REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) ")
  foreach(_grpo_part MAJOR MINOR PATCH)
    string(REGEX REPLACE ".*#define NCCL_${_grpo_part} +([0-9]+).*" "\\1" _grpo_nccl_${_grpo_part}
           "${_grpo_nccl_version_lines}")
  endforeach()
  set(_grpo_nccl_version "${_grpo_nccl_MAJOR}.${_grpo_nccl_MINOR}.${_grpo_nccl_PATCH}")
endif()

set(_grpo_nccl_missing "")
if(NOT TARGET CUDA::cudart)
  set(_grpo_nccl_missing "the CUDA runtime (find_package(CUDAToolkit) failed: set CUDAToolkit_ROOT)")
elseif(NOT _grpo_nccl_version OR NOT GRPO_NCCL_LIBRARY)
  string(CONCAT _grpo_nccl_missing "NCCL (nccl.h and libnccl not found beside the CUDA toolkit: set NCCL_HOME, or "
         "GRPO_NCCL_INCLUDE_DIR and GRPO_NCCL_LIBRARY; GRPO_NCCL_INCLUDE_DIR=${GRPO_NCCL_INCLUDE_DIR}, "
         "GRPO_NCCL_LIBRARY=${GRPO_NCCL_LIBRARY})")
elseif(_grpo_nccl_version VERSION_LESS 2.14)
  set(_grpo_nccl_missing "NCCL 2.14 or later (found ${_grpo_nccl_version} in ${GRPO_NCCL_INCLUDE_DIR})")
endif()
if(_grpo_nccl_missing)
  set(grpo_nccl_FOUND FALSE)
  set(grpo_NOT_FOUND_MESSAGE "grpo: component 'nccl' needs ${_grpo_nccl_missing}")
  unset(_grpo_nccl_missing)
  return()
endif()

# _grpo_nccl_global is GLOBAL in grpo's own build tree, where the tests live in another directory.
add_library(grpo::nccl_library UNKNOWN IMPORTED ${_grpo_nccl_global})
set_target_properties(grpo::nccl_library PROPERTIES
  IMPORTED_LOCATION "${GRPO_NCCL_LIBRARY}"
  INTERFACE_INCLUDE_DIRECTORIES "${GRPO_NCCL_INCLUDE_DIR}"
  INTERFACE_LINK_LIBRARIES CUDA::cudart)
set(GRPO_NCCL_VERSION "${_grpo_nccl_version}")
