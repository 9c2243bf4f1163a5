# epochal_allreduce_bench: MPI_Allreduce latency and bandwidth from 4 KiB to 64 MiB, the
# measured side of the scaling model (docs/scaling.md; run it with
# scripts/measure_allreduce.sh). Needs only MPI, so it links none of epochal's libraries.
# Included from benchmarks/CMakeLists.txt:
#   include(${CMAKE_CURRENT_SOURCE_DIR}/allreduce_bench.cmake)

# Skip the deprecated MPI C++ bindings (libmpi_cxx); the benchmark uses the C API.
set(MPI_CXX_SKIP_MPICXX ON CACHE BOOL "Skip the MPI-2 C++ bindings")
find_package(MPI REQUIRED COMPONENTS CXX)

add_executable(epochal_allreduce_bench ${CMAKE_CURRENT_LIST_DIR}/allreduce_bench.cc)
target_link_libraries(epochal_allreduce_bench PRIVATE MPI::MPI_CXX)
if(TARGET epochal_warnings)
  target_link_libraries(epochal_allreduce_bench PRIVATE epochal_warnings)
endif()
