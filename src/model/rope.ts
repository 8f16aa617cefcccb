/**
 * Rotary position tables, computed the way PyTorch's Llama rotary embedding does in float32
 * (inverse frequencies, then position x frequency, then cos/sin), so angles at large positions
 * round the same way as the reference.
 */
import type { RopeConfig } from "../io/config.js";

const f = Math.fround;

export class RotaryTable {
  private readonly invFreq: Float32Array;
  private readonly positionScale: number;

  constructor(headDim: number, rope: RopeConfig) {
    const half = headDim / 2;
    this.invFreq = new Float32Array(half);
    for (let i = 0; i < half; i++) this.invFreq[i] = f(1 / f(Math.pow(rope.theta, f((2 * i) / headDim))));
    this.positionScale = rope.type === "linear" ? 1 / rope.factor : 1;
  }

  /** cos and sin tables [positions.length, headDim/2] for arbitrary absolute positions. */
  tablesFor(positions: readonly number[]): { cos: Float32Array; sin: Float32Array } {
    const half = this.invFreq.length;
    const count = positions.length;
    const cos = new Float32Array(count * half);
    const sin = new Float32Array(count * half);
    for (let r = 0; r < count; r++) {
      const pos = f(positions[r]! * this.positionScale);
      for (let j = 0; j < half; j++) {
        const angle = f(pos * this.invFreq[j]!);
        cos[r * half + j] = Math.cos(angle);
        sin[r * half + j] = Math.sin(angle);
      }
    }
    return { cos, sin };
  }
}
