# epochal_module(NAME SOURCES ... DEPS ...)
# Declares library epochal_NAME with alias epochal::NAME, public headers under include/.
function(epochal_module name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(epochal_${name} STATIC ${ARG_SOURCES})
  add_library(epochal::${name} ALIAS epochal_${name})
  target_include_directories(epochal_${name} PUBLIC ${PROJECT_SOURCE_DIR}/include)
  target_link_libraries(epochal_${name} PUBLIC ${ARG_DEPS} PRIVATE epochal_warnings)
endfunction()
