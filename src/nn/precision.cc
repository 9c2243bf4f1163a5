#include "epochal/nn/precision.h"

#include <cstdio>
#include <oneapi/dnnl/dnnl.hpp>

#include "epochal/core/error.h"

namespace epochal::nn {
namespace {

bool Contains(dnnl::cpu_isa isa, dnnl::cpu_isa feature) {
  const auto have = static_cast<unsigned>(isa);
  const auto want = static_cast<unsigned>(feature);
  return (have & want) == want;
}

}  // namespace

const char* PrecisionName(Precision p) { return p == Precision::kBf16 ? "bf16" : "f32"; }

std::string DispatchedIsaName() {
  // The cpu_isa values are nested bit masks: a wider ISA contains every narrower one.
  static constexpr struct {
    dnnl::cpu_isa isa;
    const char* name;
  } kIsas[] = {
      {dnnl::cpu_isa::avx512_core_amx, "avx512_core_amx"},
      {dnnl::cpu_isa::avx512_core_bf16, "avx512_core_bf16"},
      {dnnl::cpu_isa::avx512_core_vnni, "avx512_core_vnni"},
      {dnnl::cpu_isa::avx512_core, "avx512_core"},
      {dnnl::cpu_isa::avx512_mic_4ops, "avx512_mic_4ops"},
      {dnnl::cpu_isa::avx512_mic, "avx512_mic"},
      {dnnl::cpu_isa::avx2_vnni, "avx2_vnni"},
      {dnnl::cpu_isa::avx2, "avx2"},
      {dnnl::cpu_isa::avx, "avx"},
      {dnnl::cpu_isa::sse41, "sse41"},
  };
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  for (const auto& k : kIsas) {
    if (Contains(isa, k.isa)) return k.name;
  }
  return "generic";
}

bool DispatchedIsaHasBf16() {
  return Contains(dnnl::get_effective_cpu_isa(), dnnl::cpu_isa::avx512_core_bf16);
}

PrecisionChoice ChooseAutoPrecision(std::string_view isa, bool has_bf16,
                                    std::optional<double> measured_bf16_speedup) {
  const std::string dispatched = detail::StrCat("oneDNN dispatches ", isa);
  if (!has_bf16)
    return {Precision::kF32, "precision auto: f32, " + dispatched + " (no native bf16)"};
  if (!measured_bf16_speedup) {
    return {Precision::kBf16,
            "precision auto: bf16 mixed precision, " + dispatched + " (native bf16)"};
  }
  char speed[96];
  std::snprintf(speed, sizeof(speed), "a bf16 training step of this model measured %.2fx",
                *measured_bf16_speedup);
  // NaN (a probe that could not time anything) keeps f32.
  if (*measured_bf16_speedup >= kAutoBf16MinSpeedup) {
    return {Precision::kBf16, detail::StrCat("precision auto: bf16 mixed precision, ", dispatched,
                                             " (native bf16) and ", speed, " the speed of f32")};
  }
  char need[32];
  std::snprintf(need, sizeof(need), "%.2fx", kAutoBf16MinSpeedup);
  return {Precision::kF32,
          detail::StrCat("precision auto: f32, ", dispatched, " (native bf16) but ", speed,
                         " the speed of f32, under the ", need, " that bf16 must gain")};
}

PrecisionChoice ResolvePrecision(std::string_view requested, std::string_view what,
                                 const Bf16SpeedupProbe& measure) {
  const std::string isa = DispatchedIsaName();
  const bool has_bf16 = DispatchedIsaHasBf16();
  if (requested.empty() || requested == "auto") {
    std::optional<double> speedup;
    if (has_bf16 && measure) speedup = measure();
    return ChooseAutoPrecision(isa, has_bf16, speedup);
  }
  if (requested == "f32") return {Precision::kF32, "precision f32: as requested"};
  if (requested == "bf16") {
    if (!has_bf16) {
      throw InputError(
          detail::StrCat(what, ": bf16 needs a CPU with AVX512-BF16 or AMX, but oneDNN dispatches ",
                         isa, " here; use f32 or auto"));
    }
    return {Precision::kBf16, "precision bf16: as requested, oneDNN dispatches " + isa};
  }
  throw InputError(
      detail::StrCat(what, ": must be \"auto\", \"f32\" or \"bf16\" (got \"", requested, "\")"));
}

}  // namespace epochal::nn
