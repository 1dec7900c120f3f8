// SPDX-License-Identifier: Apache-2.0
// grpo/libtorch/config.hpp: whether this translation unit's grpo::libtorch runs its row primitives on CUDA tensors
// through grpo::cuda's fused kernels (grpo/libtorch/cuda_rows.hpp), and the inline namespace that keeps the two builds
// distinct. The kernels are CUDA C++, so only a translation unit compiled by nvcc can call them: it gets them when
// LibTorch has CUDA (GRPO_TORCH_CUDA, set by grpo::torch) and grpo::cuda's headers are on its include path (it links
// grpo::cuda too). Everything else, host-compiled files included, runs torch ops on CUDA tensors. Define
// GRPO_LIBTORCH_CUDA_KERNELS to 0 to keep the torch ops in an nvcc file too; 1 outside nvcc is an error.
//
// Every declaration of the component lives in the inline namespace GRPO_LIBTORCH_NAMESPACE, so a program may link
// files of both builds: each sees its own grpo::libtorch::backend (a different type), and the generic algorithms
// instantiated for one never stand in for the other's at link time (the ODR clash that mixing Thrust device systems
// causes, thrust#1165; grpo/cccl/config.hpp does the same). Objects of the component do not cross between the kinds
// of files, nor do functions outside it that return them (a return type is not part of a function's mangled name).
#pragma once

#if !defined(GRPO_LIBTORCH_CUDA_KERNELS)
#if defined(__CUDACC__) && defined(GRPO_TORCH_CUDA) && __has_include("grpo/cccl/kernels/softmax.cuh")
#define GRPO_LIBTORCH_CUDA_KERNELS 1
#else
#define GRPO_LIBTORCH_CUDA_KERNELS 0
#endif
#endif

#if GRPO_LIBTORCH_CUDA_KERNELS && !defined(__CUDACC__)
#error "GRPO_LIBTORCH_CUDA_KERNELS=1 needs a translation unit compiled by nvcc (grpo::cuda's kernels are CUDA C++)"
#endif

// nvcc files without the kernels get a third name: the core's host kernels they call differ there too (grpo/host/
// isa.hpp builds only the generic instruction set under nvcc).
#if GRPO_LIBTORCH_CUDA_KERNELS
#define GRPO_LIBTORCH_NAMESPACE rows_cuda_kernels
#elif defined(__CUDACC__)
#define GRPO_LIBTORCH_NAMESPACE rows_torch_ops_nvcc
#else
#define GRPO_LIBTORCH_NAMESPACE rows_torch_ops
#endif
