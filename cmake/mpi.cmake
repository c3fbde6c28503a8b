# KAIO_MPI: multi-rank jobs (train/collective_mpi.cpp). AUTO builds it when an
# MPI is found (Debian: libopenmpi-dev); ON fails without one. Sets
# KAIO_MPI_ENABLED, and MPIEXEC_EXECUTABLE for the tests in tests/mpi/.
set(KAIO_MPI_ENABLED OFF)
if(NOT KAIO_MPI STREQUAL "OFF")
  if(KAIO_MPI STREQUAL "ON")
    find_package(MPI REQUIRED COMPONENTS C)
  else()
    find_package(MPI QUIET COMPONENTS C)
  endif()
  if(MPI_C_FOUND)
    set(KAIO_MPI_ENABLED ON)
  endif()
endif()
message(STATUS "kaio: MPI multi-rank jobs ${KAIO_MPI_ENABLED}")
# How the tests start a job: 2 ranks on loopback TCP (no shared-memory
# transport: containers often forbid it), more ranks than cores allowed.
set(KAIO_MPIRUN_FLAGS --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)
