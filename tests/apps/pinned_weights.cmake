# A short fixed-seed run on fixed data (the first Fashion-MNIST samples) must write
# weights.pb with a pinned SHA-256: a change that moves any number fails here, so it has
# to say so on purpose and update the pin (STYLE.md: "A refactor moves no number").
#
# cmake -DEPOCHAL=... -DMPIEXEC=... -DNP=1|2 -DCONFIG=... -DOUT=... -DEXPECTED=<sha256>
#       -P pinned_weights.cmake
# The test's environment caps oneDNN at AVX2 and OpenMP at one thread, so the kernels and
# their summation order are the same on every x86-64 machine CI runs on.
if(NOT EXISTS /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz)
  message("dataset-fashion-mnist is not installed: skipped")
  return()
endif()
file(REMOVE_RECURSE ${OUT})
set(run ${EPOCHAL} train --config ${CONFIG} --epochs 1 --limit-train 256 --limit-val 64
    --seed 7 --threads 1 --no-scan --no-checkpoints --out ${OUT})
if(NP GREATER 1)
  set(run ${MPIEXEC} -n ${NP} --oversubscribe --bind-to none ${run})
endif()
execute_process(COMMAND ${run} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "training failed (${rc}):\n${out}\n${err}")
endif()
file(SHA256 ${OUT}/weights.pb sha)
if(NOT sha STREQUAL EXPECTED)
  message(FATAL_ERROR "weights.pb of the pinned run (${NP} rank(s)) has SHA-256 ${sha}, "
                      "the pin is ${EXPECTED}: a number moved")
endif()
message("weights.pb SHA-256 ${sha} matches the pin")
