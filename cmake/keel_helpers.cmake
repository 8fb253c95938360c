# One precompiled LibTorch header, built once and reused by every target that includes torch.
add_library(keel_pch STATIC ${CMAKE_SOURCE_DIR}/cmake/pch.cc)
target_link_libraries(keel_pch PUBLIC keel_torch)
target_precompile_headers(keel_pch PRIVATE <torch/torch.h>)

# keel_use_torch_pch(target): compile the target's torch translation units with the shared PCH.
function(keel_use_torch_pch target)
  target_precompile_headers(${target} REUSE_FROM keel_pch)
endfunction()

# keel_library(name SOURCES ... [NO_PCH_SOURCES ...] DEPS ...): one library per top-level folder.
function(keel_library name)
  cmake_parse_arguments(K "" "" "SOURCES;NO_PCH_SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${K_SOURCES} ${K_NO_PCH_SOURCES})
  target_include_directories(${name} PUBLIC ${CMAKE_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${K_DEPS})
  if(K_SOURCES)
    keel_use_torch_pch(${name})
  endif()
  if(K_NO_PCH_SOURCES)
    set_source_files_properties(${K_NO_PCH_SOURCES} PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
  endif()
endfunction()

# keel_test(name LABEL unit|integration SOURCES ... [TIMEOUT s]): every test goes through here.
function(keel_test name)
  cmake_parse_arguments(K "" "LABEL;TIMEOUT" "SOURCES" ${ARGN})
  if(NOT K_LABEL)
    message(FATAL_ERROR "keel_test(${name}) needs LABEL unit or integration")
  endif()
  if(NOT K_TIMEOUT)
    set(K_TIMEOUT 300)
  endif()
  add_executable(${name} ${K_SOURCES})
  target_link_libraries(${name} PRIVATE keel_test_support)
  keel_use_torch_pch(${name})
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS ${K_LABEL} TIMEOUT ${K_TIMEOUT}
    ENVIRONMENT "KEEL_SOURCE_DIR=${CMAKE_SOURCE_DIR};KEEL_BINARY_DIR=${CMAKE_BINARY_DIR};KEEL_BIN=$<TARGET_FILE:keel>")
endfunction()
