# kaio_add_test(<name> SOURCES ... LIBS ...): one GoogleTest program, each test
# registered with CTest. A GTEST_SKIP() shows as "Skipped" in CTest's summary,
# never as a silent pass; its message says why ("skipped: no HIP device").
# The test program both functions below build; T_TIMEOUT defaults to 300 s.
macro(kaio_test_program name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE KAIO_SOURCE_DIR="${PROJECT_SOURCE_DIR}" KAIO_BUILD_DIR="${CMAKE_BINARY_DIR}")
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
endmacro()

function(kaio_add_test name)
  kaio_test_program(${name} ${ARGN})
  gtest_discover_tests(${name}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    DISCOVERY_TIMEOUT 60
    PROPERTIES SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" TIMEOUT ${T_TIMEOUT} LABELS "${T_LABELS}")
endfunction()

# kaio_mpi_test(<name> SOURCES ... LIBS ...): one GoogleTest program run as
# one CTest test under `mpirun -np 2` (every rank runs every test); built
# without MPI it runs alone and its tests skip. As root (CI) Open MPI needs
# its two OMPI_ALLOW_RUN_AS_ROOT variables.
function(kaio_mpi_test name)
  kaio_test_program(${name} ${ARGN})
  if(KAIO_MPI_ENABLED)
    add_test(NAME ${name} COMMAND ${MPIEXEC_EXECUTABLE} ${KAIO_MPIRUN_FLAGS} --tag-output -np 2 $<TARGET_FILE:${name}>)
  else()
    add_test(NAME ${name} COMMAND ${name})
  endif()
  set_tests_properties(${name} PROPERTIES SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" TIMEOUT ${T_TIMEOUT} LABELS mpi
                       ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
endfunction()
