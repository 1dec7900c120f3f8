# Conan 2 recipe for grpo: a header-only library whose own CMake package configuration (with its
# components) is what consumers load, so find_package(grpo CONFIG COMPONENTS ...) behaves exactly
# as with a plain `cmake --install`. Options add the components; their dependencies (CUDA toolkit,
# LibTorch, PCRE2 and utf8proc for the Hugging Face tokenizer) come from the consumer's
# environment, not from Conan.
import os

from conan import ConanFile
from conan.tools.build import check_min_cppstd
from conan.tools.cmake import CMake, CMakeToolchain, cmake_layout
from conan.tools.files import copy, load
import re


class GrpoConan(ConanFile):
    name = "grpo"
    description = "Header-only C++20 toolkit for R1-style reasoning RL: GRPO, PPO-clip, distillation"
    license = "Apache-2.0"
    topics = ("reinforcement-learning", "grpo", "llm", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    options = {"with_torch": [True, False], "with_cuda": [True, False], "with_hf": [True, False]}
    default_options = {"with_torch": False, "with_cuda": False, "with_hf": False}
    no_copy_source = True

    def set_version(self):
        # The version has one source of truth: project(VERSION) in the top-level CMakeLists.txt.
        text = load(self, os.path.join(self.recipe_folder, "..", "CMakeLists.txt"))
        self.version = re.search(r"project\(grpo VERSION ([0-9.]+)", text).group(1)

    def export_sources(self):
        root = os.path.join(self.recipe_folder, "..")
        for pattern in ("CMakeLists.txt", "LICENSE", "include/*", "cmake/*", "backends/*", "examples/*"):
            copy(self, pattern, root, self.export_sources_folder)

    def validate(self):
        check_min_cppstd(self, 20)

    def layout(self):
        cmake_layout(self)

    def generate(self):
        toolchain = CMakeToolchain(self)
        toolchain.cache_variables["GRPO_BUILD_TESTS"] = False
        toolchain.cache_variables["GRPO_BUILD_CLI"] = False
        toolchain.cache_variables["GRPO_BUILD_EXAMPLES"] = False
        toolchain.cache_variables["GRPO_WITH_TORCH"] = bool(self.options.with_torch)
        toolchain.cache_variables["GRPO_WITH_CUDA"] = bool(self.options.with_cuda)
        # grpo::hf needs PCRE2 and utf8proc through pkg-config, from the consumer's system as LibTorch is.
        toolchain.cache_variables["GRPO_WITH_HF"] = bool(self.options.with_hf)
        toolchain.generate()

    def build(self):
        CMake(self).configure()

    def package(self):
        CMake(self).install()

    def package_id(self):
        # Headers only: the package is the same for every compiler and build type; the options
        # stay in the id because they decide which component configurations are installed.
        self.info.settings.clear()

    def package_info(self):
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        # Consumers load the package's own grpo-config.cmake (components, version checks).
        self.cpp_info.set_property("cmake_find_mode", "none")
        self.cpp_info.builddirs.append(os.path.join("share", "grpo"))
