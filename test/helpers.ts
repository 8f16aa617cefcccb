import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { f32ToBf16, f32ToF16 } from "../src/backend/dtype.js";
import type { DType, Tensor } from "../src/io/safetensors.js";
import type { ChatRequest } from "../src/smolvlm.js";
import type { ChatMessage } from "../src/tokenizer/chat-template.js";
import type { FixtureCase } from "./model.test.js";

/** The fixtures copied from ../shared/fixtures live in test/fixtures (source tree, not dist). */
export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "test", "fixtures");

export function fixturePath(...parts: string[]): string {
  return join(FIXTURES, ...parts);
}

const tempDirs: string[] = [];

/**
 * A fresh directory under the system's temp folder, removed when the test process exits (each
 * test file runs in its own process), so that test runs leave nothing behind.
 */
export function tempDir(prefix: string): string {
  if (tempDirs.length === 0) process.once("exit", () => {
    for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  });
  const dir = mkdtempSync(join(tmpdir(), `smolvlm-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}

export function readJson<T = unknown>(...parts: string[]): T {
  return JSON.parse(readFileSync(fixturePath(...parts), "utf8")) as T;
}

/** Reads a raw little-endian float32 file (the fixtures' .f32 format). */
export function readF32(...parts: string[]): Float32Array {
  const buf = readFileSync(fixturePath(...parts));
  const out = new Float32Array(buf.byteLength / 4);
  for (let i = 0; i < out.length; i++) out[i] = buf.readFloatLE(i * 4);
  return out;
}

/** ||a - b|| / ||b||, the relative L2 error used by every numeric comparison. */
export function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i]! - b[i]!;
    num += d * d;
    den += b[i]! * b[i]!;
  }
  return Math.sqrt(num / den);
}

export const TINY_MODELS = ["tiny-bf16", "tiny-384-bf16"] as const;

/** Deterministic noise (an LCG's top byte): the hardest input for rounding in image tests. */
export function noise(n: number, seed: number): Uint8Array {
  const d = new Uint8Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    d[i] = x >>> 24;
  }
  return d;
}

/** First 16 hex digits of a sha256: how the image tests pin exact pixel outputs. */
export const sha16 = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex").slice(0, 16);

/** Deterministic uniform numbers in [-scale, scale). */
export function rng(seed: number): (scale?: number) => number {
  let s = seed >>> 0;
  return (scale = 1) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  };
}

export function randomArray(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = r(scale);
  return a;
}

export function randomWeight(dtype: DType, out: number, inDim: number, seed: number): Tensor {
  const values = randomArray(out * inDim, seed, 0.2);
  if (dtype === "F32") return { dtype, shape: [out, inDim], data: values };
  const data = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) data[i] = dtype === "BF16" ? f32ToBf16(values[i]!) : f32ToF16(values[i]!);
  return { dtype, shape: [out, inDim], data };
}

/** The library request a fixture case describes (its conversation, images and processor settings). */
export function requestFor(c: FixtureCase): ChatRequest {
  return {
    messages: c.conversation as ChatMessage[],
    images: c.images.map((p) => fixturePath(p)),
    imageSize: c.processor_kwargs.size?.longest_edge,
    imageSplitting: c.processor_kwargs.do_image_splitting,
  };
}
