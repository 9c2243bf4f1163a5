// Numeric precision of the conv and dense layers.
//
// kBf16 is mixed precision: conv and dense primitives take bf16 src, weights and
// diff_dst (oneDNN's AMX or AVX512-BF16 kernels) and accumulate in f32. Activations and
// their gradients are bf16 between layers: every conv and dense layer but the last writes
// bf16, and batch norm, max pool, dropout and flatten read and write bf16 (oneDNN's bf16
// primitives, or loops that compute in f32 and round once). The first layer reads the f32
// images and the last writes f32 logits, so the loss is f32; batch-norm statistics,
// master weights, parameter gradients and the optimizer stay f32. Checkpoints and
// weights files are f32 whatever the precision.
//
// "auto" asks oneDNN which ISA it dispatches (dnnl::get_effective_cpu_isa, which also
// honours ONEDNN_MAX_CPU_ISA), never /proc/cpuinfo: bf16 where that ISA has native bf16
// instructions (AVX512-BF16 or AMX), f32 elsewhere.
// Thread safety: all functions are safe to call from any thread.
#pragma once

#include <string>
#include <string_view>

namespace epochal::nn {

enum class Precision { kF32, kBf16 };

const char* PrecisionName(Precision p);

// The ISA oneDNN dispatches on this machine, as oneDNN names it ("avx512_core_amx").
std::string DispatchedIsaName();
// Whether that ISA executes bf16 natively (avx512_core_bf16 or avx512_core_amx).
bool DispatchedIsaHasBf16();

struct PrecisionChoice {
  Precision precision = Precision::kF32;
  // One line saying what was chosen and why ("bf16: oneDNN dispatches avx512_core_amx").
  std::string reason;
};

// Resolves "auto" (or ""), "f32" or "bf16". Throws InputError for any other value and
// for "bf16" where the dispatched ISA has no bf16 support; `what` names the flag or
// config field in the message.
PrecisionChoice ResolvePrecision(std::string_view requested, std::string_view what);

}  // namespace epochal::nn
