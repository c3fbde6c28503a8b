# Fuzz targets: fuzz/<name>.cpp defines LLVMFuzzerTestOneInput.
# Every build gets replay_<name>, a plain driver (no libFuzzer) that CTest runs
# over fuzz/regressions/<name> and fuzz/corpus/<name>, so each crash input kept
# there is re-checked by every `make test`. With KAIO_FUZZ=ON (clang) the build
# also gets fuzz_<name>, the libFuzzer binary that scripts/fuzz.sh runs.
function(kaio_add_fuzzer name)
  cmake_parse_arguments(F "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(replay_${name} ${F_SOURCES} ${PROJECT_SOURCE_DIR}/fuzz/replay_main.cpp)
  target_link_libraries(replay_${name} PRIVATE ${F_LIBS})
  add_test(NAME fuzz_replay_${name}
           COMMAND replay_${name} fuzz/regressions/${name} fuzz/corpus/${name}
           WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(fuzz_replay_${name} PROPERTIES LABELS "fuzz" TIMEOUT 300)
  if(KAIO_FUZZ)
    add_executable(fuzz_${name} ${F_SOURCES})
    target_link_libraries(fuzz_${name} PRIVATE ${F_LIBS})
    target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
    set_property(GLOBAL APPEND PROPERTY KAIO_FUZZ_TARGETS fuzz_${name})
  endif()
endfunction()

add_subdirectory(fuzz)
