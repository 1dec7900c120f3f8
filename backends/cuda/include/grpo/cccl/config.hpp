// SPDX-License-Identifier: Apache-2.0
// grpo/cccl/config.hpp: which Thrust device system a translation unit builds grpo::cccl for, read from
// THRUST_DEVICE_SYSTEM (CPP, OMP or CUDA; CUDA needs nvcc), the host/device annotation of its functors,
// and the inline namespace that makes the three builds distinct types. Not a way to choose a backend at
// run time: translation units built for different systems may be linked into one program, and each sees
// its own grpo::cccl::backend without an ODR clash (the mixing trouble of thrust#1165).
#pragma once

#include <thrust/execution_policy.h>

#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
#define GRPO_CCCL_CUDA 1
#define GRPO_CCCL_SYSTEM_NAMESPACE system_cuda
#elif THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP
#define GRPO_CCCL_CUDA 0
#define GRPO_CCCL_SYSTEM_NAMESPACE system_omp
#elif THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CPP
#define GRPO_CCCL_CUDA 0
#define GRPO_CCCL_SYSTEM_NAMESPACE system_cpp
#else
#error "grpo::cccl supports THRUST_DEVICE_SYSTEM CPP, OMP and CUDA"
#endif

#if defined(__CUDACC__)
#define GRPO_CCCL_HOST_DEVICE __host__ __device__
#else
#define GRPO_CCCL_HOST_DEVICE
#endif

namespace grpo::cccl {
inline namespace GRPO_CCCL_SYSTEM_NAMESPACE {

/// The device system of this translation unit's build, for messages and tests.
inline constexpr const char* device_system_name =
#if THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
    "cuda";
#elif THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP
    "omp";
#else
    "cpp";
#endif

}  // namespace GRPO_CCCL_SYSTEM_NAMESPACE
}  // namespace grpo::cccl
