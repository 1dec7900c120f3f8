# What the grpo::cuda component needs: the Thrust headers, version 1.17 or later, either the CCCL of a CUDA
# toolkit (include/cccl since CUDA 13, include before) or a standalone Thrust such as Debian's libthrust-dev.
# Defines the imported target grpo::cccl_headers that grpo::cuda links. Included by the build tree and, once
# installed, by grpo-config.cmake before grpo-cuda-targets.cmake; when the headers are missing it sets
# grpo_cuda_FOUND FALSE and grpo_NOT_FOUND_MESSAGE naming them. GRPO_THRUST_INCLUDE_DIR overrides the search.
# The device system is the consumer's choice: nvcc for CUDA, or THRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_CPP
# (or _OMP, with OpenMP) for any C++20 compiler.
if(TARGET grpo::cccl_headers)
  return()
endif()

find_path(GRPO_THRUST_INCLUDE_DIR
  NAMES thrust/version.h
  HINTS ${CUDAToolkit_INCLUDE_DIRS} ${CUDAToolkit_ROOT} ENV CUDA_PATH ENV CUDA_HOME /usr/local/cuda
  PATH_SUFFIXES cccl include/cccl include
  DOC "Directory holding thrust/version.h: a CUDA toolkit's include/cccl, or a standalone Thrust >= 1.17")

set(_grpo_thrust_version "")
if(GRPO_THRUST_INCLUDE_DIR AND EXISTS "${GRPO_THRUST_INCLUDE_DIR}/thrust/version.h")
  file(STRINGS "${GRPO_THRUST_INCLUDE_DIR}/thrust/version.h" _grpo_thrust_version_line
       REGEX "^#define[ \t]+THRUST_VERSION[ \t]+[0-9]+")
  string(REGEX REPLACE "^#define[ \t]+THRUST_VERSION[ \t]+([0-9]+).*" "\\1" _grpo_thrust_version
         "${_grpo_thrust_version_line}")
endif()

# Thrust 2 and later need libcu++ (cuda/std/...), which CCCL ships next to thrust/.
if(NOT _grpo_thrust_version OR _grpo_thrust_version LESS 101700)
  set(_grpo_cuda_missing "the Thrust headers, version 1.17 or later")
elseif(_grpo_thrust_version GREATER_EQUAL 200000 AND NOT EXISTS "${GRPO_THRUST_INCLUDE_DIR}/cuda/std/version")
  set(_grpo_cuda_missing "libcu++ (cuda/std/version) next to Thrust ${_grpo_thrust_version}")
endif()
if(_grpo_cuda_missing)
  set(grpo_cuda_FOUND FALSE)
  string(CONCAT grpo_NOT_FOUND_MESSAGE
         "grpo: component 'cuda' needs ${_grpo_cuda_missing} (from a CUDA toolkit's CCCL or Debian's "
         "libthrust-dev); not found: set GRPO_THRUST_INCLUDE_DIR to the directory holding thrust/")
  unset(_grpo_cuda_missing)
  return()
endif()

# _grpo_cuda_global is GLOBAL in grpo's own build tree, where the tests live in another directory.
add_library(grpo::cccl_headers INTERFACE IMPORTED ${_grpo_cuda_global})
set_target_properties(grpo::cccl_headers PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${GRPO_THRUST_INCLUDE_DIR}")
set(GRPO_THRUST_VERSION "${_grpo_thrust_version}")
