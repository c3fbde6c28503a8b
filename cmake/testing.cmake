# kaio_add_test(<name> SOURCES ... LIBS ...): one GoogleTest program, each test
# registered with CTest. A GTEST_SKIP() shows as "Skipped" in CTest's summary,
# never as a silent pass; its message says why ("skipped: no HIP device").
function(kaio_add_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE KAIO_SOURCE_DIR="${PROJECT_SOURCE_DIR}" KAIO_BUILD_DIR="${CMAKE_BINARY_DIR}")
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  gtest_discover_tests(${name}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    DISCOVERY_TIMEOUT 60
    PROPERTIES SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]" TIMEOUT ${T_TIMEOUT} LABELS "${T_LABELS}")
endfunction()
