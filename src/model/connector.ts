/**
 * The Idefics3 connector: pixel shuffle (each scale x scale block of neighbouring patches becomes
 * one token with scale² times the features) followed by a linear projection into the text model's
 * hidden size. 1024 patches at scale 4 become 64 image tokens.
 */
import type { WeightStore } from "../io/checkpoint.js";
import type { Kernels, LinearWeight } from "../backend/kernels.js";
import { releaseWeightPages } from "../backend/native-kernels.js";

export class Connector {
  readonly scaleFactor: number;
  private readonly kernels: Kernels;
  private readonly projection: LinearWeight;
  private readonly visionHidden: number;

  constructor(store: WeightStore, visionHidden: number, textHidden: number, scaleFactor: number, kernels: Kernels) {
    this.scaleFactor = scaleFactor;
    this.kernels = kernels;
    this.visionHidden = visionHidden;
    this.projection = store.getLinear("model.connector.modality_projection.proj.weight", [textHidden, visionHidden * scaleFactor * scaleFactor]);
  }

  /** Gives back the projection's mapped pages, as VisionEncoder.releaseWeights; the bytes given back. */
  releaseWeights(): number {
    return releaseWeightPages(this.projection);
  }

  /** [side*side, hidden] patch features of one tile -> [(side/s)², textHidden] image tokens. */
  project(patches: Float32Array, side: number): Float32Array {
    const shuffled = this.pixelShuffle(patches, side);
    const tokens = (side / this.scaleFactor) ** 2;
    return this.kernels.linear(shuffled, tokens, this.projection);
  }

  /**
   * Output token (ty, tx) holds, in order, the patches (ty*s + dy, tx*s + dx) for dy, then dx:
   * feature index = (dy * s + dx) * hidden + e. This is the element order the reference's
   * view/permute/reshape sequence produces.
   */
  pixelShuffle(patches: Float32Array, side: number): Float32Array {
    const s = this.scaleFactor;
    const e = this.visionHidden;
    const outSide = side / s;
    const out = new Float32Array(patches.length);
    let o = 0;
    for (let ty = 0; ty < outSide; ty++) {
      for (let tx = 0; tx < outSide; tx++) {
        for (let dy = 0; dy < s; dy++) {
          for (let dx = 0; dx < s; dx++) {
            const src = ((ty * s + dy) * side + (tx * s + dx)) * e;
            out.set(patches.subarray(src, src + e), o);
            o += e;
          }
        }
      }
    }
    return out;
  }
}
