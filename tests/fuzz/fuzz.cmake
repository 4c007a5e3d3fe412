# Fuzz targets: every tests/fuzz/fuzz_NAME.c (docs/fuzzing.md).
#  - Every build: replay_NAME (the target + replay_main.c) and the ctest test
#    fuzz_corpus_NAME that runs each input of tests/fuzz/corpus/NAME/ once (the
#    seeds and every crash the fuzzer ever found), under ASan/UBSan in the
#    sanitizer build.
#  - -DQSUR_FUZZ=ON (clang): fuzz_NAME, the libFuzzer binary, with ASan and
#    UBSan (float-cast-overflow included), and the target fuzz_all;
#    tests/fuzz/run.sh builds and runs them for a bounded time.
# Adding a target: write tests/fuzz/fuzz_NAME.c and put seeds in
# tests/fuzz/corpus/NAME/ (tests/fuzz/make_corpus.c makes the generated ones).
option(QSUR_FUZZ "Build the libFuzzer targets (needs clang; see tests/fuzz/run.sh)" OFF)

set(QSUR_FUZZ_DIR ${CMAKE_SOURCE_DIR}/tests/fuzz)
add_library(qsur_fuzz_common STATIC ${QSUR_FUZZ_DIR}/common.c)
target_include_directories(qsur_fuzz_common PUBLIC ${QSUR_FUZZ_DIR})
target_link_libraries(qsur_fuzz_common PUBLIC qsur_ui)

if(QSUR_FUZZ)
  if(QSUR_CUDA)
    message(FATAL_ERROR "QSUR_FUZZ needs -DQSUR_CUDA=OFF (nvcc takes no fuzzer flags; tests/fuzz/run.sh sets it)")
  endif()
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "QSUR_FUZZ needs clang (libFuzzer): CC=clang cmake ... -DQSUR_FUZZ=ON")
  endif()
  # Coverage instrumentation for the code under test; sanitizers abort on the
  # first report so libFuzzer records it as a crash. -Wno-error: this build
  # looks for memory errors, the warning builds are the others.
  set(QSUR_FUZZ_FLAGS -fsanitize=fuzzer-no-link,address,undefined,float-cast-overflow
      -fno-sanitize-recover=all -fno-omit-frame-pointer -g -Wno-error)
  foreach(lib qsur_engine qsur_ui qsur_fuzz_common)
    target_compile_options(${lib} PRIVATE ${QSUR_FUZZ_FLAGS})
  endforeach()
  target_link_options(qsur_engine INTERFACE -fsanitize=address,undefined)
  add_custom_target(fuzz_all)
endif()

file(GLOB QSUR_FUZZ_TARGETS CONFIGURE_DEPENDS ${QSUR_FUZZ_DIR}/fuzz_*.c)
foreach(src ${QSUR_FUZZ_TARGETS})
  get_filename_component(stem ${src} NAME_WE)
  string(REGEX REPLACE "^fuzz_" "" name ${stem})
  # A target for an engine part that is not in this tree yet (its qsur/ header
  # is missing) is skipped; run.sh says so.
  file(STRINGS ${src} headers REGEX "^#include \"qsur/[a-z0-9_]+\\.h\"")
  set(missing "")
  foreach(h ${headers})
    string(REGEX REPLACE "^#include \"(qsur/[a-z0-9_]+\\.h)\".*" "\\1" h ${h})
    if(NOT EXISTS ${CMAKE_SOURCE_DIR}/include/${h})
      set(missing ${h})
    endif()
  endforeach()
  if(missing)
    message(STATUS "fuzz target ${name} skipped: include/${missing} is not in this tree")
    continue()
  endif()
  add_executable(replay_${name} ${src} ${QSUR_FUZZ_DIR}/replay_main.c)
  target_link_libraries(replay_${name} PRIVATE qsur_fuzz_common)
  add_test(NAME fuzz_corpus_${name} COMMAND replay_${name} ${QSUR_FUZZ_DIR}/corpus/${name}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(fuzz_corpus_${name} PROPERTIES ENVIRONMENT "${QSUR_TEST_ENV}" TIMEOUT 300 LABELS "fast;fuzz")
  if(QSUR_FUZZ)
    add_executable(fuzz_${name} ${src})
    target_compile_options(fuzz_${name} PRIVATE ${QSUR_FUZZ_FLAGS})
    target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
    target_link_libraries(fuzz_${name} PRIVATE qsur_fuzz_common)
    add_dependencies(fuzz_all fuzz_${name})
  endif()
endforeach()

# The seed generator (writes tests/fuzz/corpus/*/seed-*; run by hand, output committed).
add_executable(fuzz_make_corpus ${QSUR_FUZZ_DIR}/make_corpus.c)
target_link_libraries(fuzz_make_corpus PRIVATE qsur_fuzz_common)
