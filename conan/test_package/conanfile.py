# Builds small programs against the created grpo package through its own CMake config: the core always, and one
# program per backend component the package was created with (options with_torch, with_cuda).
import os

from conan import ConanFile
from conan.tools.build import can_run
from conan.tools.cmake import CMake, CMakeToolchain, cmake_layout


class GrpoTestPackage(ConanFile):
    settings = "os", "arch", "compiler", "build_type"
    generators = "CMakeDeps"

    def requirements(self):
        self.requires(self.tested_reference_str)

    def layout(self):
        cmake_layout(self)

    def _components(self):
        options = self.dependencies["grpo"].options
        return [name for name, on in (("torch", options.with_torch), ("cuda", options.with_cuda)) if on]

    def generate(self):
        toolchain = CMakeToolchain(self)
        toolchain.cache_variables["GRPO_TEST_COMPONENTS"] = ";".join(self._components())
        toolchain.generate()

    def build(self):
        cmake = CMake(self)
        cmake.configure()
        cmake.build()

    def test(self):
        if can_run(self):
            for program in ["test_package"] + [f"test_package_{c}" for c in self._components()]:
                self.run(os.path.join(self.cpp.build.bindir, program), env="conanrun")
