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
// honours ONEDNN_MAX_CPU_ISA), never /proc/cpuinfo: f32 where that ISA has no native bf16
// instructions (AVX512-BF16 or AMX). Where it has them, a native ISA is not yet a faster
// one: AVX512-BF16 without AMX ran MiniVGGNet 1.8x faster than f32 on an AMD Zen 4 but
// 0.8x as fast on an Intel Xeon whose AMX the hypervisor hid (docs/design-decisions.md).
// So the caller that builds the model passes a probe that times a bf16 and an f32
// training step of it, and auto picks bf16 only when bf16 measures at least
// kAutoBf16MinSpeedup times as fast. Without a probe it picks bf16 on the ISA alone.
// Thread safety: all functions are safe to call from any thread; ResolvePrecision's probe
// runs on the calling thread and is as safe as the probe is.
#pragma once

#include <functional>
#include <optional>
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

// bf16 must measure at least this much faster than f32 for "auto" to choose it: bf16
// costs accuracy (docs/results.md: 0.9296 against 0.9328 on the reference run), so a
// draw, or a gain within the probe's noise, keeps f32.
inline constexpr double kAutoBf16MinSpeedup = 1.2;

// How many times as fast a bf16 training step runs as an f32 one on the caller's model
// (MeasureBf16StepSpeedup in model.h, or that averaged over the processes of a job).
using Bf16SpeedupProbe = std::function<double()>;

// The "auto" decision alone, for the ISA oneDNN dispatches (`isa`, `has_bf16`) and, where
// one was taken, the measured bf16 speedup. Pure.
PrecisionChoice ChooseAutoPrecision(std::string_view isa, bool has_bf16,
                                    std::optional<double> measured_bf16_speedup);

// Resolves "auto" (or ""), "f32" or "bf16". Throws InputError for any other value and
// for "bf16" where the dispatched ISA has no bf16 support; `what` names the flag or
// config field in the message. "auto" calls `measure` only where the ISA has native
// bf16 (so a probe that is a collective is called by every process or none, when every
// process has the same ISA).
PrecisionChoice ResolvePrecision(std::string_view requested, std::string_view what,
                                 const Bf16SpeedupProbe& measure = {});

}  // namespace epochal::nn
