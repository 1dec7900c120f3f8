# What the grpo::mpi component needs: an MPI library for C (the component uses MPI's C API from C++), found with
# CMake's FindMPI as the imported target MPI::MPI_CXX, without the deprecated MPI C++ bindings (MPI_CXX_SKIP_MPICXX).
# Included by the build tree and, once installed, by grpo-config.cmake before grpo-mpi-targets.cmake; when MPI is
# missing it sets grpo_mpi_FOUND FALSE and grpo_NOT_FOUND_MESSAGE naming it (Debian: apt-get install openmpi-bin
# libopenmpi-dev). FindMPI also sets MPIEXEC_EXECUTABLE and MPIEXEC_NUMPROC_FLAG, the launcher the tests use.
if(TARGET MPI::MPI_CXX)
  return()
endif()
set(MPI_CXX_SKIP_MPICXX ON)
find_package(MPI QUIET COMPONENTS CXX)
if(NOT TARGET MPI::MPI_CXX)
  set(grpo_mpi_FOUND FALSE)
  string(CONCAT grpo_NOT_FOUND_MESSAGE
         "grpo: component 'mpi' needs an MPI library (find_package(MPI COMPONENTS CXX) failed; Debian: apt-get install "
         "openmpi-bin libopenmpi-dev, or set MPI_HOME / MPI_CXX_COMPILER to another MPI)")
endif()
