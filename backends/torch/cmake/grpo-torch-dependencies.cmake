# The dependencies of grpo's 'torch' component; grpo-config.cmake includes this file before
# grpo-torch-targets.cmake. When LibTorch cannot be found the component is marked not found with a message saying
# how to point CMake at it, instead of failing inside the targets file on an unknown 'torch' target.
# The component inherits LibTorch's _GLIBCXX_USE_CXX11_ABI choice (see backends/torch/CMakeLists.txt).
if(NOT TARGET torch)
  find_package(Torch CONFIG QUIET)
endif()
if(NOT TARGET torch)
  set(grpo_torch_FOUND FALSE)
  set(grpo_NOT_FOUND_MESSAGE
      "grpo: component 'torch' needs LibTorch (find_package(Torch) failed: set Torch_DIR or CMAKE_PREFIX_PATH)")
  return()
endif()
