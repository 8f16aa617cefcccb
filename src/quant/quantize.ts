/**
 * Quantizing weights as a model loads (or as `smolvlm quantize` writes a folder): the addon when
 * it is built (same codes as the reference, much faster), else the TypeScript reference.
 */
import type { Tensor } from "../io/safetensors.js";
import { nativeQuantize, releasePages } from "../backend/native-kernels.js";
import { quantizeReference } from "./reference.js";
import type { QuantScheme, QuantizedTensor } from "./format.js";

export function quantizeWeight(w: Tensor, scheme: QuantScheme): QuantizedTensor {
  return nativeQuantize(w, scheme) ?? quantizeReference(w, scheme);
}

/**
 * Quantizes a weight that views a memory-mapped checkpoint and gives its source pages back, so
 * that quantizing at load time never holds the whole source model and its quantized copy at once.
 */
export function quantizeAndRelease(w: Tensor, scheme: QuantScheme): QuantizedTensor {
  const q = quantizeWeight(w, scheme);
  releasePages(w.data);
  return q;
}
