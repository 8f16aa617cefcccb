/** What the accuracy benches (quant-accuracy, trained-text) share. */
import type { Tensor } from "../src/io/safetensors.js";
import type { Kernels, LinearWeight } from "../src/backend/kernels.js";
import { loadNativeKernels } from "../src/backend/native-kernels.js";
import { dequantizeRows } from "../src/quant/reference.js";
import { quantizeWeight } from "../src/quant/quantize.js";
import type { QuantScheme } from "../src/quant/format.js";

/** Relative L2 error of `a` against the reference `b`. */
export function relL2(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

/**
 * Kernels for measuring where quantization error comes from: the native kernels in float32 mode,
 * except that the weights `select` picks are replaced by their quantize-dequantize round trip.
 * The activations stay float32, so what remains is the weights' own error.
 */
export function withRoundTrip(select: (shape: readonly number[]) => boolean, scheme: QuantScheme): Kernels {
  const native = loadNativeKernels();
  if (!native) throw new Error("round-trip kernels need the native addon");
  const rounded = new Map<LinearWeight, Tensor>();
  const roundTrip = (w: Tensor): Tensor => {
    let f = rounded.get(w);
    if (!f) {
      const data = new Float32Array(w.shape[0]! * w.shape[1]!);
      dequantizeRows(quantizeWeight(w, scheme), 0, w.shape[0]!, data);
      f = { dtype: "F32", shape: w.shape, data };
      rounded.set(w, f);
    }
    return f;
  };
  const linear: Kernels["linear"] = (x, rows, w, bias, out) => native.linearF32(x, rows, select(w.shape) ? roundTrip(w as Tensor) : w, bias, out);
  return { ...native, name: "round-trip", linear, linearMany: (x, rows, ws, biases, outs) => ws.map((w, i) => linear(x, rows, w, biases?.[i], outs?.[i])) };
}
