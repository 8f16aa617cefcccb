/**
 * The native kernels (C++ addon) against the TypeScript reference kernels, at every instruction
 * set this CPU runs (e.g. avx2 and scalar on an AVX2 machine), plus the tiny models end to end.
 *
 * When the addon is not built these tests fail if CI is set, and are skipped otherwise.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadNativeKernels, nativeLoadError, type NativeIsa, type NativeKernels } from "../src/backend/native-kernels.js";
import { tsKernels } from "../src/backend/ts-kernels.js";
import { f32ToBf16, bf16ToF32, f16ToF32, roundRowsToBf16 } from "../src/backend/dtype.js";
import type { AttentionParams, Kernels } from "../src/backend/kernels.js";
import { loadModelConfig } from "../src/io/config.js";
import { WeightStore } from "../src/io/checkpoint.js";
import { Idefics3Model } from "../src/model/idefics3.js";
import { quantizeReference } from "../src/quant/reference.js";
import { resizeLanczos, resizeLanczosTorch, torchLanczosCoefficients, typescriptPasses } from "../src/image/resize.js";
import type { RgbImage } from "../src/image/types.js";
import { fixturePath, randomArray, randomWeight, readF32, readJson, relL2, TINY_MODELS } from "./helpers.js";

function assertClose(actual: Float32Array, expected: Float32Array, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  const err = relL2(actual, expected);
  assert.ok(err <= tol, `${what}: relative L2 ${err.toExponential(3)} > ${tol}`);
}

/** Reference results are computed once and shared by every ISA's run. */
const memo = new Map<string, unknown>();
function cached<T>(key: string, make: () => T): T {
  if (!memo.has(key)) memo.set(key, make());
  return memo.get(key) as T;
}

const LINEAR_SHAPES: [rows: number, inDim: number, outDim: number][] = [
  [1, 33, 17],
  [3, 33, 17],
  [70, 33, 17],
  [4, 960, 70],
  [9, 300, 129],
  [300, 64, 40],
  [70, 520, 100],
  [5, 1, 3],
  [2, 7, 5],
  [7, 100, 33],
  [13, 200, 50],
];

interface AttnCase {
  name: string;
  seqQ: number;
  seqK: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  offset: number | null;
  /** KV rows allocated (a cache with spare capacity), >= seqK. */
  capacity: number;
}

const ATTENTION_CASES: AttnCase[] = [
  { name: "causal with offset, GQA 15/5", seqQ: 7, seqK: 12, heads: 15, kvHeads: 5, headDim: 64, offset: 5, capacity: 16 },
  { name: "decode step, GQA 15/5", seqQ: 1, seqK: 101, heads: 15, kvHeads: 5, headDim: 64, offset: 100, capacity: 128 },
  { name: "two-row step, GQA 3/1, odd headDim", seqQ: 2, seqK: 40, heads: 3, kvHeads: 1, headDim: 20, offset: 38, capacity: 40 },
  { name: "causal prefill, GQA 4/2, headDim 16", seqQ: 70, seqK: 70, heads: 4, kvHeads: 2, headDim: 16, offset: 0, capacity: 80 },
  { name: "causal continuation over 300 keys, GQA 6/2", seqQ: 13, seqK: 300, heads: 6, kvHeads: 2, headDim: 32, offset: 287, capacity: 300 },
  { name: "non-causal, headDim 6", seqQ: 33, seqK: 33, heads: 2, kvHeads: 2, headDim: 6, offset: null, capacity: 33 },
  { name: "non-causal over 1024 keys (vision tile)", seqQ: 1024, seqK: 1024, heads: 2, kvHeads: 2, headDim: 64, offset: null, capacity: 1024 },
  // Awkward key counts (63, 65, 1023), causal and not, GQA and not.
  { name: "non-causal, 63 keys, 65 queries", seqQ: 65, seqK: 63, heads: 3, kvHeads: 3, headDim: 64, offset: null, capacity: 63 },
  { name: "non-causal, 65 keys, 7 queries, GQA 15/5", seqQ: 7, seqK: 65, heads: 15, kvHeads: 5, headDim: 64, offset: null, capacity: 70 },
  { name: "causal prefill over 63 keys, GQA 15/5", seqQ: 63, seqK: 63, heads: 15, kvHeads: 5, headDim: 64, offset: 0, capacity: 64 },
  { name: "causal continuation, 65 queries over 1023 keys, GQA 15/5", seqQ: 65, seqK: 1023, heads: 15, kvHeads: 5, headDim: 64, offset: 958, capacity: 1024 },
  { name: "decode step over 1023 keys, GQA 15/5", seqQ: 1, seqK: 1023, heads: 15, kvHeads: 5, headDim: 64, offset: 1022, capacity: 1023 },
  // Long contexts split their keys across tasks on the row path (merged after): two causal rows of
  // which the second sees one key more, and a single KV head over 3000 keys.
  { name: "two-row step over 600 keys (key splits), GQA 3/1", seqQ: 2, seqK: 600, heads: 3, kvHeads: 1, headDim: 64, offset: 598, capacity: 600 },
  { name: "decode step over 3000 keys (key splits), GQA 2/1, headDim 20", seqQ: 1, seqK: 3000, heads: 2, kvHeads: 1, headDim: 20, offset: 2999, capacity: 3000 },
  { name: "non-causal, 1023 keys and queries, headDim 7", seqQ: 1023, seqK: 1023, heads: 1, kvHeads: 1, headDim: 7, offset: null, capacity: 1023 },
  // The row path takes up to 4 heads of a group per pass: groups of 1 (no GQA), 8 (4 + 4) and 9
  // (4 + 4 + 1), with and without the unrolled 64-wide heads.
  { name: "decode step, no GQA (4/4)", seqQ: 1, seqK: 77, heads: 4, kvHeads: 4, headDim: 64, offset: 76, capacity: 80 },
  { name: "decode step over 700 keys (key splits), GQA 16/2", seqQ: 1, seqK: 700, heads: 16, kvHeads: 2, headDim: 64, offset: 699, capacity: 700 },
  { name: "two-row step, GQA 9/1, headDim 24", seqQ: 2, seqK: 129, heads: 9, kvHeads: 1, headDim: 24, offset: 127, capacity: 130 },
  // bf16 mode's decoding products take 32 dims per instruction, two chunks per pass: a head of 3
  // chunks (2 + 1, key splits, odd key count) and one of a single chunk.
  { name: "decode step over 301 keys (key splits), GQA 9/3, headDim 96", seqQ: 1, seqK: 301, heads: 9, kvHeads: 3, headDim: 96, offset: 300, capacity: 320 },
  { name: "two-row step, GQA 5/1, headDim 32", seqQ: 2, seqK: 67, heads: 5, kvHeads: 1, headDim: 32, offset: 65, capacity: 70 },
];

function attentionParams(c: AttnCase, seed: number): AttentionParams {
  return {
    q: randomArray(c.seqQ * c.heads * c.headDim, seed, 2),
    k: randomArray(c.capacity * c.kvHeads * c.headDim, seed + 1, 2),
    v: randomArray(c.capacity * c.kvHeads * c.headDim, seed + 2),
    seqQ: c.seqQ,
    seqK: c.seqK,
    numHeads: c.heads,
    numKvHeads: c.kvHeads,
    headDim: c.headDim,
    scale: 1 / Math.sqrt(c.headDim),
    causalOffset: c.offset,
  };
}

function toBf16Bits(a: Float32Array): Uint16Array {
  return Uint16Array.from(a, (v) => f32ToBf16(v));
}

function elementInput(n: number, seed: number): Float32Array {
  const x = randomArray(n, seed, 6);
  // Values where exp under- or overflows.
  const extremes = [-100, 100, -87.5, 88.5, -20, 20, 0, -0];
  for (let i = 0; i < extremes.length && 3 + i < n; i++) x[3 + i] = extremes[i]!;
  return x;
}

function kernelTests(native: NativeKernels, isa: NativeIsa): void {
  before(() => assert.ok(native.setIsa(isa), `setIsa(${isa})`));

  test("reports the instruction set in use", () => {
    assert.equal(native.info().isa, isa);
    assert.ok(native.info().threads >= 1);
  });

  test("measurePeakFlops: the FMA peak, and the bf16 and int8 products where this ISA has them", () => {
    const p = native.measurePeakFlops(0.02);
    assert.equal(p.isa, isa);
    assert.ok(p.gflops > 0 && p.gflopsOneThread > 0, "FMA rates");
    const info = native.info();
    // bf16 mode's vdpbf16ps peak exactly where bf16 mode runs on it.
    assert.equal(p.bf16Gflops !== undefined, info.bf16Native, "bf16 peak present iff bf16 mode is native");
    if (p.bf16Gflops !== undefined) assert.ok(p.bf16Gflops > 0 && p.bf16Instruction === "vdpbf16ps zmm");
    // The int8 GEMM's product on x86 (zmm at the avx512 level, ymm at avx2); none elsewhere.
    const int8 = { avx512: "vpmaddubsw zmm", avx2: "vpmaddubsw ymm" } as Record<string, string>;
    assert.equal(p.int8Instruction, int8[isa]);
    if (int8[isa]) assert.ok(p.int8Gops! > 0);
  });

  for (const dtype of ["F32", "BF16", "F16"] as const) {
    test(`linear, ${dtype} weights, odd shapes, with and without bias`, () => {
      for (const [rows, inDim, outDim] of LINEAR_SHAPES) {
        const x = randomArray(rows * inDim, rows * 7 + inDim);
        const w = randomWeight(dtype, outDim, inDim, outDim * 13 + inDim);
        const bias = randomArray(outDim, outDim);
        for (const b of [null, bias]) {
          const key = `linear ${dtype} ${rows} ${inDim} ${outDim} ${b ? "bias" : ""}`;
          const ref = cached(key, () => tsKernels.linear(x, rows, w, b));
          assertClose(native.linear(x, rows, w, b), ref, 1e-5, key);
        }
      }
    });
  }

  // The awkward sizes: rows and columns (input and output widths) of 1, 7, 63, 65, 1023.
  const AWKWARD = [1, 7, 63, 65, 1023];
  for (const dtype of ["F32", "BF16", "F16"] as const) {
    test(`linear, ${dtype} weights, awkward sizes (1, 7, 63, 65, 1023): f32 mode within 1e-5, bf16 mode within 1e-2`, () => {
      for (const rows of AWKWARD) {
        for (const inDim of AWKWARD) {
          for (const outDim of AWKWARD) {
            // Keep the reference affordable: 1023 x 1023 x 1023 is left out (every pair of 1023s is in).
            if (rows * inDim * outDim > 70e6) continue;
            const x = randomArray(rows * inDim, 3 * rows + 5 * inDim + 7 * outDim);
            const w = randomWeight(dtype, outDim, inDim, 11 * outDim + inDim);
            const bias = outDim % 2 ? randomArray(outDim, outDim + 17) : null;
            const key = `awkward linear ${dtype} ${rows}x${inDim}x${outDim}`;
            const ref = cached(key, () => tsKernels.linear(x, rows, w, bias));
            assertClose(native.linearF32(x, rows, w, bias), ref, 1e-5, `${key} f32`);
            assertClose(native.linearBf16(x, rows, w, bias), ref, 1e-2, `${key} bf16`);
          }
        }
      }
    });
  }

  test("linear reads a subarray input (non-zero byte offset) and ignores extra rows", () => {
    const rows = 6, inDim = 40, outDim = 24;
    const big = randomArray(5 + (rows + 2) * inDim, 99);
    const x = big.subarray(5, 5 + rows * inDim + 3);
    const w = randomWeight("BF16", outDim, inDim, 98);
    assertClose(native.linear(x, rows, w), tsKernels.linear(x, rows, w), 1e-5, "subarray");
  });

  test("linear at model sizes (decode row and a block of rows)", () => {
    for (const rows of [1, 64]) {
      const x = randomArray(rows * 960, 5 + rows);
      const w = randomWeight("BF16", 2560, 960, 6);
      const key = `linear big ${rows}`;
      const ref = cached(key, () => tsKernels.linear(x, rows, w));
      assertClose(native.linear(x, rows, w), ref, 1e-5, key);
    }
  });

  test("linear in bf16 mode: bf16-rounded activations, within 1e-2 of the reference", () => {
    // [80, 960, 32]: more activations than one rounding chunk (65536), so the rounding is split.
    for (const [rows, inDim, outDim] of [...LINEAR_SHAPES, [64, 960, 256], [80, 960, 32]] as [number, number, number][]) {
      const x = randomArray(rows * inDim, rows + 3 * inDim);
      const w = randomWeight("BF16", outDim, inDim, outDim + inDim);
      const bias = randomArray(outDim, 1 + outDim);
      const ref = tsKernels.linear(x, rows, w, bias);
      assertClose(native.linearBf16(x, rows, w, bias), ref, 1e-2, `bf16 ${rows}x${inDim}x${outDim}`);
      // The exact statement: the float32 result on bf16-rounded activations, to summation order.
      const rounded = x.map((v) => bf16ToF32(f32ToBf16(v)));
      assertClose(native.linearBf16(x, rows, w, bias), tsKernels.linear(rounded, rows, w, bias), 1e-5, `bf16 exact ${rows}x${inDim}x${outDim}`);
    }
  });

  test("linearMode switches linear between float32 and bf16 arithmetic", () => {
    const rows = 16, inDim = 96, outDim = 48;
    const x = randomArray(rows * inDim, 31);
    const w = randomWeight("BF16", outDim, inDim, 32);
    try {
      native.linearMode = "bf16";
      assert.deepEqual(native.linear(x, rows, w), native.linearBf16(x, rows, w));
      native.linearMode = "f32";
      assert.deepEqual(native.linear(x, rows, w), native.linearF32(x, rows, w));
      // F16 weights ignore the mode.
      const wh = randomWeight("F16", outDim, inDim, 33);
      native.linearMode = "bf16";
      assertClose(native.linear(x, rows, wh), tsKernels.linear(x, rows, wh), 1e-5, "f16 in bf16 mode");
    } finally {
      native.linearMode = "f32";
    }
  });

  test("linearMany with float weights gives each weight's own linear, in both modes (1 to 20 rows, 2 to 4 weights, mixed dtypes)", () => {
    const cases: { rows: number; inDim: number; outs: number[]; dtypes: ("F32" | "BF16" | "F16")[] }[] = [
      { rows: 1, inDim: 960, outs: [960, 320, 320], dtypes: ["BF16", "BF16", "BF16"] },
      { rows: 1, inDim: 33, outs: [17, 1, 65], dtypes: ["F32", "F32", "F32"] },
      { rows: 1, inDim: 100, outs: [7, 63, 129, 5], dtypes: ["F16", "F16", "F16", "F16"] },
      { rows: 1, inDim: 64, outs: [40, 24], dtypes: ["BF16", "F32"] },
      { rows: 3, inDim: 130, outs: [70, 33], dtypes: ["BF16", "BF16"] },
      { rows: 9, inDim: 96, outs: [48, 48, 16], dtypes: ["F32", "F32", "F32"] },
      { rows: 20, inDim: 64, outs: [129, 40], dtypes: ["BF16", "BF16"] },
    ];
    try {
      for (const mode of ["f32", "bf16"] as const) {
        native.linearMode = mode;
        for (const [n, c] of cases.entries()) {
          const x = randomArray(c.rows * c.inDim, 40 + n, 2);
          const ws = c.outs.map((o, i) => randomWeight(c.dtypes[i]!, o, c.inDim, 50 + 7 * n + i));
          const biases = c.outs.map((o, i) => (i % 2 ? randomArray(o, 90 + i) : null));
          const many = native.linearMany(x, c.rows, ws, biases);
          ws.forEach((w, i) => assert.deepEqual(many[i], native.linear(x, c.rows, w, biases[i]), `${mode} case ${n} weight ${i}`));
          ws.forEach((w, i) => assertClose(many[i]!, tsKernels.linear(x, c.rows, w, biases[i]), mode === "bf16" ? 1e-2 : 1e-5, `${mode} case ${n} weight ${i} vs reference`));
        }
      }
    } finally {
      native.linearMode = "f32";
    }
  });

  test("rmsNorm and layerNorm", () => {
    for (const rows of [1, 3, 70]) {
      for (const dim of [33, 960]) {
        const x = randomArray(rows * dim, rows + dim, 3);
        const w = randomArray(dim, dim + 1);
        const b = randomArray(dim, dim + 2);
        assertClose(native.rmsNorm(x, rows, w, 1e-5), tsKernels.rmsNorm(x, rows, w, 1e-5), 1e-6, `rmsNorm ${rows}x${dim}`);
        assertClose(native.layerNorm(x, rows, w, b, 1e-6), tsKernels.layerNorm(x, rows, w, b, 1e-6), 1e-6, `layerNorm ${rows}x${dim}`);
      }
    }
  });

  test("rope", () => {
    for (const [rows, heads, headDim] of [[1, 15, 64], [3, 5, 64], [70, 2, 6], [4, 3, 18]] as const) {
      const x = randomArray(rows * heads * headDim, rows + headDim, 2);
      const cos = randomArray((rows * headDim) / 2, 3);
      const sin = randomArray((rows * headDim) / 2, 4);
      const expected = x.slice();
      tsKernels.rope(expected, rows, heads, headDim, cos, sin);
      native.rope(x, rows, heads, headDim, cos, sin);
      assertClose(x, expected, 1e-6, `rope ${rows}x${heads}x${headDim}`);
    }
  });

  for (const c of ATTENTION_CASES) {
    test(`attention: ${c.name}`, () => {
      const p = attentionParams(c, c.seqQ + c.seqK + c.heads);
      const ref = cached(`attention ${c.name}`, () => tsKernels.attention(p));
      assertClose(native.attention(p), ref, 1e-5, c.name);
    });
  }

  // Scores hundreds apart: most probabilities fall below e^-87, where the softmax's exponential
  // (exp_nonpositive) clamps instead of going to 0 or a subnormal. Blocked path and row path.
  for (const c of [ATTENTION_CASES[0]!, ATTENTION_CASES.find((x) => x.seqQ === 1)!]) {
    test(`attention with scores hundreds apart: ${c.name}`, () => {
      const p = attentionParams(c, 41);
      const wide = { ...p, q: p.q.map((v) => v * 12), k: p.k.map((v) => v * 12) };
      const ref = tsKernels.attention(wide);
      assertClose(native.attention(wide), ref, 1e-5, `${c.name}, wide scores`);
    });
  }

  // A bf16 KV cache: both backends read the same bf16 keys and values.
  for (const c of ATTENTION_CASES.filter((_, i) => i % 2 === 0)) {
    test(`attention, bf16 keys and values: ${c.name}`, () => {
      const p = attentionParams(c, c.seqQ + c.seqK + c.heads + 7);
      const bf16 = { ...p, k: toBf16Bits(p.k as Float32Array), v: toBf16Bits(p.v as Float32Array) };
      const ref = cached(`attention bf16 ${c.name}`, () => tsKernels.attention(bf16));
      assertClose(native.attention(bf16), ref, 1e-5, `${c.name} (bf16 KV)`);
    });
    test(`attention, head-major keys and values (the KV cache's layout), f32 and bf16: ${c.name}`, () => {
      // The same keys and values as the position-major case, moved to [head][capacity][headDim]:
      // the result must not change (the reference reads the position-major copy).
      const p = attentionParams(c, c.seqQ + c.seqK + c.heads + 7);
      const D = c.headDim;
      const headMajor = (a: Float32Array) => {
        const out = new Float32Array(a.length);
        for (let t = 0; t < c.capacity; t++) {
          for (let h = 0; h < c.kvHeads; h++) out.set(a.subarray((t * c.kvHeads + h) * D, (t * c.kvHeads + h + 1) * D), (h * c.capacity + t) * D);
        }
        return out;
      };
      const strides = { kvRowStride: D, kvHeadStride: c.capacity * D };
      const k = headMajor(p.k as Float32Array), v = headMajor(p.v as Float32Array);
      const ref = cached(`attention head-major ${c.name}`, () => tsKernels.attention(p));
      assertClose(native.attention({ ...p, k, v, ...strides }), ref, 1e-5, `${c.name} head-major`);
      assertClose(tsKernels.attention({ ...p, k, v, ...strides }), ref, 1e-12, `${c.name} head-major (reference)`);
      // Same inputs as the bf16 test above (its seed), so its bf16 reference is shared.
      const bf16 = { ...p, k: toBf16Bits(p.k as Float32Array), v: toBf16Bits(p.v as Float32Array) };
      const refBf16 = cached(`attention bf16 ${c.name}`, () => tsKernels.attention(bf16));
      assertClose(native.attention({ ...p, k: toBf16Bits(k), v: toBf16Bits(v), ...strides }), refBf16, 1e-5, `${c.name} head-major bf16`);
    });
  }

  // bf16 mode: on CPUs where it runs on vdpbf16ps, attention takes bf16 products too (queries,
  // keys and softmax numerators rounded to bf16; bf16 mode's bound) over more than 2 queries, and
  // when decoding (1 or 2 queries) from a bf16 cache with a head size a multiple of 32.
  for (const c of ATTENTION_CASES) {
    test(`attention in bf16 mode, f32 and bf16 KV: ${c.name}`, () => {
      const p = attentionParams(c, c.seqQ + c.seqK + c.heads);
      const ref = cached(`attention ${c.name}`, () => tsKernels.attention(p));
      const bf16Kv = { ...p, k: toBf16Bits(p.k as Float32Array), v: toBf16Bits(p.v as Float32Array) };
      const refBf16Kv = tsKernels.attention(bf16Kv);
      native.linearMode = "bf16";
      try {
        const got = native.attention(p);
        assertClose(got, ref, 1e-2, `${c.name} (bf16 mode)`);
        const gotBf16Kv = native.attention(bf16Kv);
        assertClose(gotBf16Kv, refBf16Kv, 1e-2, `${c.name} (bf16 mode, bf16 KV)`);
        // The bf16 paths are taken exactly where the instruction is.
        const bf16Path = native.info().bf16Native && c.seqQ > 2;
        const err = relL2(got, ref);
        assert.ok(bf16Path ? err > 1e-5 : err <= 1e-5, `${c.name}: bf16 mode error ${err} (bf16 path ${bf16Path})`);
        const bf16KvPath = native.info().bf16Native && (c.seqQ > 2 || c.headDim % 32 === 0);
        const errKv = relL2(gotBf16Kv, refBf16Kv);
        assert.ok(bf16KvPath ? errKv > 1e-5 : errKv <= 1e-5, `${c.name}: bf16 mode error with bf16 KV ${errKv} (bf16 path ${bf16KvPath})`);
      } finally {
        native.linearMode = "f32";
      }
    });
  }

  test("siluMul, gelu (tanh and erf), addInPlace", () => {
    for (const n of [1, 17, 100003]) {
      const g = elementInput(n, n);
      const u = randomArray(n, n + 1);
      assertClose(native.siluMul(g, u), tsKernels.siluMul(g, u), 1e-6, `siluMul ${n}`);
      for (const approximate of [true, false]) {
        const expected = g.slice();
        tsKernels.gelu(expected, approximate);
        const actual = g.slice();
        native.gelu(actual, approximate);
        assertClose(actual, expected, 2e-6, `gelu ${approximate ? "tanh" : "erf"} ${n}`);
      }
      const expected = g.slice();
      tsKernels.addInPlace(expected, u);
      const actual = g.slice();
      native.addInPlace(actual, u);
      assert.deepEqual(actual, expected, `addInPlace ${n}`);
    }
  });
}

/** Every kernel that takes an `out` array writes its result there, and rejects one of the wrong size. */
function outputArrayTests(k: Kernels): void {
  test(`${k.name}: results go into the output arrays given, which must be the result's size`, () => {
    const x = randomArray(2 * 64, 1, 2);
    const w = randomWeight("BF16", 40, 64, 2);
    const into = new Float32Array(2 * 40);
    assert.equal(k.linear(x, 2, w, null, into), into);
    assert.deepEqual(into, k.linear(x, 2, w));
    assert.throws(() => k.linear(x, 2, w, null, new Float32Array(79)), /output array has 79 values, expected 80/);
    const q4 = quantizeReference(w, "q4");
    const intoQ = new Float32Array(2 * 40);
    assert.equal(k.linear(x, 2, q4, null, intoQ), intoQ);
    assert.deepEqual(intoQ, k.linear(x, 2, q4));
    assert.throws(() => k.linear(x, 2, q4, null, new Float32Array(81)), /output array/);
    const outs = [new Float32Array(80), new Float32Array(80)];
    const many = k.linearMany(x, 2, [w, w], undefined, outs);
    assert.ok(many[0] === outs[0] && many[1] === outs[1]);
    assert.deepEqual(outs[1], into);
    const norm = new Float32Array(2 * 64);
    const g = randomArray(64, 3);
    assert.equal(k.rmsNorm(x, 2, g, 1e-5, norm), norm);
    assert.deepEqual(norm, k.rmsNorm(x, 2, g, 1e-5));
    const ln = new Float32Array(2 * 64);
    const beta = randomArray(64, 4);
    assert.equal(k.layerNorm(x, 2, g, beta, 1e-6, ln), ln);
    assert.deepEqual(ln, k.layerNorm(x, 2, g, beta, 1e-6));
    assert.throws(() => k.layerNorm(x, 2, g, beta, 1e-6, new Float32Array(127)), /output array/);
    const act = new Float32Array(80);
    assert.equal(k.siluMul(into, outs[0]!, act), act);
    assert.deepEqual(act, k.siluMul(into, outs[0]!));
    assert.throws(() => k.siluMul(into, outs[0]!, new Float32Array(81)), /output array/);
    const p = attentionParams(ATTENTION_CASES[1]!, 5);
    const attn = new Float32Array(p.seqQ * p.numHeads * p.headDim);
    assert.equal(k.attention({ ...p, out: attn }), attn);
    assert.deepEqual(attn, k.attention(p));
    assert.throws(() => k.attention({ ...p, out: new Float32Array(3) }), /output array/);
  });
}

outputArrayTests(tsKernels);

const native = loadNativeKernels();

if (!native) {
  const reason = nativeLoadError() ?? "unknown reason";
  if (process.env.CI) {
    test("native kernels are built (required when CI is set)", () => {
      assert.fail(`native kernels unavailable: ${reason}`);
    });
  } else {
    test("native kernels", { skip: `native addon unavailable (${reason}); set CI=1 to make this a failure` }, () => {});
  }
} else {
  const info = native.info();
  const best = info.isas[0]!;
  for (const isa of info.isas) {
    describe(`native kernels (${isa}, ${info.threads} threads)`, () => {
      kernelTests(native, isa);
      after(() => native.setIsa(best));
    });
  }

  outputArrayTests(native);

  test("argument errors are thrown, not crashes", () => {
    const w = randomWeight("BF16", 4, 8, 1);
    assert.throws(() => native.linear(new Float32Array(7), 1, w), /expected 1x8/);
    assert.throws(() => native.linear(new Float32Array(8), 1, { dtype: "BF16", shape: [4, 8], data: new Float32Array(32) }), /Uint16Array/);
    assert.throws(() => native.linear(new Float32Array(8), 1, { dtype: "BF16", shape: [4, 8], data: new Uint16Array(31) }), /weight data/);
    assert.throws(() => native.linear(new Float32Array(8), 1, w, new Float32Array(3)), /bias/);
    assert.throws(() => native.rmsNorm(new Float32Array(5), 2, new Float32Array(4), 1e-5), /x has 5/);
    const p = attentionParams(ATTENTION_CASES[0]!, 1);
    assert.throws(() => native.attention({ ...p, numKvHeads: 4 }), /multiple/);
    assert.throws(() => native.attention({ ...p, seqK: 100 }), /k has/);
    assert.throws(() => native.attention({ ...p, k: new Uint16Array(p.k.length) }), /same element type/);
    assert.throws(() => native.attention({ ...p, kvRowStride: p.headDim, kvHeadStride: 1000 * p.headDim }), /k has/);
    assert.equal(native.setIsa("nonsense" as NativeIsa), false);
  });

  // The bf16 KV cache's writes: the same bits as the reference, for strided rows, ties, NaN,
  // infinities, subnormals and values that round up into the next binade or to infinity.
  test("roundRowsToBf16: the same bits as the reference", () => {
    const cols = 64;
    const stride = 5 * cols;
    const rows = 37;
    const src = randomArray(rows * stride + 3, 11, 40);
    const special = [NaN, -NaN, Infinity, -Infinity, 0, -0, 3.4e38, -3.4e38, 3.3961e38, 1e-40, -1e-40, 1.0039062, 1.0117188, -1.0039062, 255.5, 1.5e-45];
    special.forEach((v, i) => (src[3 + cols + i] = v));
    for (const [from, r, c] of [[3, rows, cols], [3 + 2 * cols, rows - 1, cols], [0, 1, 7], [5, 4, 1], [0, 0, 64]] as const) {
      const want = new Uint16Array(r * c + 9);
      const got = new Uint16Array(r * c + 9);
      roundRowsToBf16(src, from, stride, r, c, want, 9);
      native.roundRowsToBf16!(src, from, stride, r, c, got, 9);
      assert.deepEqual(got, want, `from ${from}, ${r} x ${c}`);
    }
    assert.throws(() => native.roundRowsToBf16!(src, 0, stride, rows + 1, cols, new Uint16Array((rows + 1) * cols), 0), /src has/);
    assert.throws(() => native.roundRowsToBf16!(src, 0, stride, 2, cols, new Uint16Array(2 * cols - 1), 0), /dst has/);
    assert.throws(() => native.roundRowsToBf16!(src, 0, 8, 2, cols, new Uint16Array(2 * cols), 0), /srcStride/);
  });

  // The image resize's passes: byte for byte the TypeScript reference's, up and down, odd sizes,
  // one-pixel images, both fixed-point precisions, and Pillow's vertical-first path for tall images.
  test("resample passes: the same bytes as the TypeScript reference", () => {
    const image = (width: number, height: number, seed: number): RgbImage => ({
      width,
      height,
      data: Uint8Array.from({ length: width * height * 3 }, (_, i) => (Math.imul(i + seed, 2654435761) >>> 24) & 255),
    });
    const sizes: [number, number, number, number][] = [
      [1024, 768, 2048, 1536], // upscale, as a photo to the longest edge
      [2048, 1536, 512, 512], // downscale by 4 and 3 (the global tile)
      [65, 63, 7, 1023],
      [1, 1, 5, 3],
      [9, 5, 1, 1],
      [300, 200, 300, 77], // vertical only
      [301, 200, 64, 200], // horizontal only
      [3, 400, 2, 100], // over 100x taller than wide: Pillow resizes vertically first
    ];
    for (const [w, h, ow, oh] of sizes) {
      const img = image(w, h, w + h);
      for (const [name, resize] of [["torch", resizeLanczosTorch], ["pillow", resizeLanczos]] as const) {
        const ref: RgbImage = resize(img, ow, oh, typescriptPasses);
        const got: RgbImage = resize(img, ow, oh, native.resample!);
        assert.equal(got.data.length, ref.data.length, `${name} ${w}x${h} -> ${ow}x${oh}`);
        assert.ok(Buffer.from(got.data).equals(Buffer.from(ref.data)), `${name} ${w}x${h} -> ${ow}x${oh}: bytes differ`);
      }
    }
  });

  test("resample passes: ranges outside the image are errors, not reads", () => {
    const passes = native.resample!;
    const c = torchLanczosCoefficients(40, 10);
    const src = new Uint8Array(40 * 3 * 4);
    assert.throws(() => passes.horizontal(src, 39, 0, 4, 10, c, new Uint8Array(10 * 3 * 4)), /reads inputs/);
    assert.throws(() => passes.horizontal(src, 40, 0, 5, 10, c, new Uint8Array(10 * 3 * 5)), /src has/);
    assert.throws(() => passes.horizontal(src, 40, 0, 4, 10, c, new Uint8Array(10)), /out has/);
    assert.throws(() => passes.vertical(new Uint8Array(3 * 39), 1, 10, c, 0, new Uint8Array(30)), /reads inputs/);
    assert.throws(() => passes.vertical(new Uint8Array(3 * 40), 1, 10, c, 1, new Uint8Array(30)), /reads inputs/);
    assert.throws(() => passes.vertical(new Uint8Array(3 * 40), 1, 10, { ...c, precision: 0 }, 0, new Uint8Array(30)), /precision/);
    assert.throws(() => passes.vertical(new Uint8Array(3 * 40), 1, 10, { ...c, ksize: 1 }, 0, new Uint8Array(30)), /reads inputs/);
  });

  // End to end: the tiny models on the native kernels against the PyTorch fixtures.
  for (const name of TINY_MODELS) {
    test(`${name} on native kernels: image features and logits within 1e-4 of the reference`, (t) => {
      const dir = fixturePath("models", name);
      const store = WeightStore.fromDir(dir);
      const model = new Idefics3Model(store, loadModelConfig(join(dir, "config.json")), native);
      store.close();
      const c = readJson<{
        input_ids: number[];
        pixel_values_shape: number[];
        pixel_values_file: string;
        image_hidden_states_file: string;
        logits_last_file: string;
      }>("cases", `${name}.describe_nosplit.json`);
      const [, tiles, , , size] = c.pixel_values_shape as [number, number, number, number, number];
      const features = model.encodeImages({ data: readF32(c.pixel_values_file), tiles, size });
      const featErr = relL2(features, readF32(c.image_hidden_states_file));
      const logits = model.forward(model.embedPrompt(c.input_ids, features), c.input_ids.length, model.text.newCache());
      const logitErr = relL2(logits, readF32(c.logits_last_file));
      t.diagnostic(`features relL2 ${featErr.toExponential(2)}, logits relL2 ${logitErr.toExponential(2)}`);
      assert.ok(featErr <= 1e-4, `image features relative L2 ${featErr}`);
      assert.ok(logitErr <= 1e-4, `logits relative L2 ${logitErr}`);
    });
  }
}

// Keep the 16-bit helpers referenced: they document how the weights above are made.
void bf16ToF32;
void f16ToF32;
