/**
 * Weight quantization (q8 = Q8_0, q4 = Q4_1): the round-trip bound of each scheme, the native
 * quantizer against the reference (identical codes), and the native quantized linear layer
 * against the reference at every instruction set this CPU runs, on both of its paths (few rows:
 * integer dot products; many rows: an integer GEMM on x86, expanded codes through the float GEMM
 * otherwise).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { copyAndRelease, dropFileCache, loadNativeKernels, mapFile, nativeLoadError, nativeQuantize, releasePages, settlePageCache, type NativeIsa } from "../src/backend/native-kernels.js";
import { f16ToF32 } from "../src/backend/dtype.js";
import { encodeSafetensors, SafetensorsFile, type DType, type Tensor } from "../src/io/safetensors.js";
import { QUANT_BLOCK, type QuantScheme, type QuantizedTensor } from "../src/quant/format.js";
import type { LinearWeight } from "../src/backend/kernels.js";
import { dequantizeRows, linearQuantizedReference, quantizeReference, roundHalfEven } from "../src/quant/reference.js";
import { randomArray, randomWeight, relL2, rng } from "./helpers.js";
import { tsKernels } from "../src/backend/ts-kernels.js";

const SCHEMES: QuantScheme[] = ["q8", "q4"];

/** A weight whose blocks are unlike each other: varied scales, offsets, outliers, zero and constant blocks. */
function awkwardWeight(out: number, inDim: number, seed: number): Tensor {
  const r = rng(seed);
  const data = new Float32Array(out * inDim);
  for (let b = 0; b < data.length / QUANT_BLOCK; b++) {
    const kind = b % 7;
    const scale = 10 ** r(3); // 1e-3 .. 1e3
    const offset = kind === 3 ? r(2) * scale : 0;
    for (let i = 0; i < QUANT_BLOCK; i++) {
      let v = r(scale) + offset;
      if (kind === 4 && i === 5) v = 40 * scale; // one outlier
      if (kind === 5) v = 0;
      if (kind === 6) v = 0.37 * scale; // constant
      data[b * QUANT_BLOCK + i] = v;
    }
  }
  return { dtype: "F32", shape: [out, inDim], data };
}

describe("quantization round trip", () => {
  test("roundHalfEven rounds ties to even, like the CPU", () => {
    assert.deepEqual([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, -2.6].map(roundHalfEven), [0, 2, 2, -0, -2, -2, 2, -3]);
  });

  for (const scheme of SCHEMES) {
    test(`${scheme}: every value within half a step of its block (plus the half-float rounding of the minimum)`, () => {
      const w = awkwardWeight(24, 8 * QUANT_BLOCK, 7);
      const q = quantizeReference(w, scheme);
      const back = new Float32Array(w.data.length);
      dequantizeRows(q, 0, 24, back);
      const src = w.data as Float32Array;
      let worst = 0;
      for (let b = 0; b < src.length / QUANT_BLOCK; b++) {
        const d = f16ToF32(q.scales[b]!);
        const m = q.mins ? f16ToF32(q.mins[b]!) : 0;
        let lo = Infinity, hi = -Infinity;
        for (let i = 0; i < QUANT_BLOCK; i++) {
          lo = Math.min(lo, src[b * QUANT_BLOCK + i]!);
          hi = Math.max(hi, src[b * QUANT_BLOCK + i]!);
        }
        // The step d is the block's range over 127 (q8) or 15 (q4), rounded to a half float.
        const range = scheme === "q8" ? Math.max(Math.abs(lo), Math.abs(hi)) / 127 : (hi - m) / 15;
        assert.ok(d >= range * (1 - 1e-6) && d <= range * (1 + 2 ** -10) + 6e-8, `block ${b}: scale ${d} vs ${range}`);
        // Scales round up and minimums down, so nothing is clipped: half a step, plus float32 rounding.
        const bound = d / 2 + Math.max(Math.abs(lo), Math.abs(hi)) * 4e-7;
        if (q.mins) assert.ok(m <= lo, `block ${b}: minimum ${m} above the smallest value ${lo}`);
        for (let i = 0; i < QUANT_BLOCK; i++) {
          const k = b * QUANT_BLOCK + i;
          const err = Math.abs(back[k]! - src[k]!);
          worst = Math.max(worst, err / (d || 1));
          assert.ok(err <= bound, `${scheme} block ${b} value ${i}: |${back[k]} - ${src[k]}| = ${err} > ${bound}`);
        }
      }
      assert.ok(worst > 0.3, "the test data should reach near the bound");
    });
  }

  test("q4 keeps the minimum, so an offset block loses nothing a centred one would not", () => {
    const data = new Float32Array(QUANT_BLOCK);
    for (let i = 0; i < QUANT_BLOCK; i++) data[i] = 5 + i / 31; // values 5..6
    const q = quantizeReference({ dtype: "F32", shape: [1, QUANT_BLOCK], data }, "q4");
    const back = new Float32Array(QUANT_BLOCK);
    dequantizeRows(q, 0, 1, back);
    assert.ok(relL2(back, data) < 1e-2, `relL2 ${relL2(back, data)}`);
  });

  test("refuses shapes that do not split into blocks, and scales beyond a half float", () => {
    assert.throws(() => quantizeReference(randomWeight("F32", 2, 48, 1), "q8"), /multiple of 32/);
    const huge = new Float32Array(QUANT_BLOCK).fill(1e10);
    assert.throws(() => quantizeReference({ dtype: "F32", shape: [1, QUANT_BLOCK], data: huge }, "q8"), /half-float/);
  });
});

const native = loadNativeKernels();
const skip = native ? false : process.env.CI ? false : `native addon unavailable: ${nativeLoadError()}`;

function sameQuantized(a: QuantizedTensor, b: QuantizedTensor, what: string): void {
  assert.equal(a.dtype, b.dtype);
  assert.deepEqual([...a.shape], [...b.shape]);
  assert.ok(Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength).equals(Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength)), `${what}: codes`);
  assert.deepEqual(a.scales, b.scales, `${what}: scales`);
  assert.deepEqual(a.mins, b.mins, `${what}: minimums`);
}

describe("native quantization", { skip }, () => {
  for (const scheme of SCHEMES) {
    for (const dtype of ["F32", "BF16", "F16"] as DType[]) {
      test(`${scheme} from ${dtype}: the same codes, scales and minimums as the reference`, () => {
        const w = randomWeight(dtype, 37, 5 * QUANT_BLOCK, 11);
        sameQuantized(nativeQuantize(w, scheme)!, quantizeReference(w, scheme), `${scheme}/${dtype}`);
      });
    }
    test(`${scheme}: awkward blocks (outliers, zero, constant, offset, 1e-3..1e3 scales) quantize identically`, () => {
      const w = awkwardWeight(19, 12 * QUANT_BLOCK, 3);
      sameQuantized(nativeQuantize(w, scheme)!, quantizeReference(w, scheme), scheme);
    });
  }

  test("a scale that overflows a half float is an error, not a silent infinity", () => {
    const huge = new Float32Array(QUANT_BLOCK).fill(1e10);
    assert.throws(() => nativeQuantize({ dtype: "F32", shape: [1, QUANT_BLOCK], data: huge }, "q8"), /half float/);
  });
});

// rows 1..16 take the few-row integer path, 17 and more the many-row path (x86: the integer GEMM,
// whose tiles are 4 rows by 16 outputs on ymm and up to 6 rows by 32 outputs on zmm, in blocks of
// 64 rows; other CPUs: the expanded-code float GEMM). The many-row shapes give the zmm kernel every
// row remainder 1..5 and odd, partial and whole last panels.
const SHAPES: [rows: number, inDim: number, outDim: number][] = [
  [1, 32, 1],
  [1, 64, 7],
  [1, 960, 63],
  [1, 96, 65],
  [1, 256, 40],
  [1, 288, 9],
  [1, 320, 66],
  [2, 128, 33],
  [3, 64, 1023],
  [4, 320, 66],
  [5, 32, 9],
  [7, 256, 65],
  [8, 64, 31],
  [9, 96, 17],
  [16, 64, 20],
  [17, 288, 130],
  [21, 64, 48],
  [40, 96, 32],
  [65, 160, 7],
  [130, 768, 300],
];

/**
 * The weight layouts the native quantized linear reads: q8, q4, and q4 repacked for decoding
 * (Q4_1x4, native/quant.cc), each with the canonical weight the reference reads.
 */
const LAYOUTS: { name: string; make: (w: Tensor) => { ref: QuantizedTensor; run: LinearWeight } }[] = [
  { name: "q8", make: (w) => ((q) => ({ ref: q, run: q }))(quantizeReference(w, "q8")) },
  { name: "q4", make: (w) => ((q) => ({ ref: q, run: q }))(quantizeReference(w, "q4")) },
  { name: "q4 as Q4_1x4", make: (w) => ((q) => ({ ref: q, run: native!.packQ4(q) }))(quantizeReference(w, "q4")) },
];

describe("native quantized linear against the reference", { skip }, () => {
  const isas = native ? (native.info().isas as NativeIsa[]) : [];
  const initial = native?.info().isa;
  for (const isa of isas) {
    for (const layout of LAYOUTS) {
      test(`${isa} ${layout.name}: rows x in x out over ${SHAPES.length} shapes, relative L2 <= 1e-5`, () => {
        assert.ok(native!.setIsa(isa));
        try {
          for (const [rows, inDim, outDim] of SHAPES) {
            const { ref, run } = layout.make(randomWeight("BF16", outDim, inDim, rows * 7 + outDim));
            const x = randomArray(rows * inDim, inDim + outDim, 2);
            const bias = outDim % 2 ? randomArray(outDim, 5) : null;
            const want = linearQuantizedReference(x, rows, ref, bias);
            const got = native!.linear(x, rows, run, bias);
            const err = relL2(got, want);
            assert.ok(err <= 1e-5, `${isa} ${layout.name} ${rows}x${inDim}x${outDim}: relative L2 ${err.toExponential(3)}`);
          }
        } finally {
          native!.setIsa(initial!);
        }
      });
    }
  }

  // The VNNI kernels (vpdpbusd) cannot run on a CPU without VNNI; their code runs here with the
  // instruction emulated in AVX2 (setQuantDot), against the same reference.
  test("x86 VNNI kernel code (vpdpbusd emulated): rows x in x out over the same shapes, relative L2 <= 1e-5", (t) => {
    if (!native!.info().isas.includes("avx2")) return t.skip("needs AVX2");
    assert.equal(native!.setQuantDot("nonsense" as "auto"), false);
    assert.ok(native!.setIsa("avx2"));
    assert.ok(native!.setQuantDot("vnni-emulated"));
    try {
      for (const layout of LAYOUTS) {
        for (const [rows, inDim, outDim] of SHAPES) {
          const { ref, run } = layout.make(randomWeight("BF16", outDim, inDim, rows * 7 + outDim));
          const x = randomArray(rows * inDim, inDim + outDim, 2);
          const bias = outDim % 2 ? randomArray(outDim, 5) : null;
          const err = relL2(native!.linear(x, rows, run, bias), linearQuantizedReference(x, rows, ref, bias));
          assert.ok(err <= 1e-5, `emulated VNNI ${layout.name} ${rows}x${inDim}x${outDim}: relative L2 ${err.toExponential(3)}`);
        }
        // Extreme codes and activations: every product at its largest magnitude, both signs.
        const { ref, run } = layout.make({ dtype: "F32", shape: [8, 64], data: Float32Array.from({ length: 512 }, (_, i) => (i % 3 === 0 ? -1 : 1)) });
        const x = Float32Array.from({ length: 2 * 64 }, (_, i) => (i % 5 === 0 ? -1 : 1));
        const err = relL2(native!.linear(x, 2, run), linearQuantizedReference(x, 2, ref, null));
        assert.ok(err <= 1e-5, `emulated VNNI ${layout.name} extremes: relative L2 ${err.toExponential(3)}`);
      }
    } finally {
      native!.setQuantDot("auto");
      native!.setIsa(initial!);
    }
  });

  // The many-row Q4_1 path on x86 sums a block's products in int16 (native/quant_gemm.inc): its
  // bound, 8 · 2 · 15 · 127 = 30480, is reached by codes of 15 against activation codes of ±127.
  // Q8_0 codes of ±127 against the same activations: the vpmaddwd path's largest products.
  test("many rows, largest codes against largest activations (both signs): no int16 overflow, at every ISA", () => {
    const isas = native!.info().isas as NativeIsa[];
    const initial = native!.info().isa;
    // Every block: 31 values at 1 and one at -1, so the codes are 15 but one 0.
    const w: Tensor = { dtype: "F32", shape: [20, 256], data: Float32Array.from({ length: 20 * 256 }, (_, i) => (i % 32 === 7 ? -1 : 1)) };
    const q4 = quantizeReference(w, "q4");
    assert.equal((q4.data as Uint8Array)[0], 0xff);
    const q8 = quantizeReference(w, "q8"); // codes ±127
    const rows = 21;
    // Rows of +1 (codes 127), rows of -1 (codes -127), and mixed rows.
    const x = Float32Array.from({ length: rows * 256 }, (_, i) => {
      const r = Math.floor(i / 256);
      return r % 3 === 0 ? 1 : r % 3 === 1 ? -1 : i % 5 === 0 ? -1 : 1;
    });
    const want = linearQuantizedReference(x, rows, q4, null);
    const want8 = linearQuantizedReference(x, rows, q8, null);
    assert.ok(Math.abs(want[0]!) > 200, `reference output ${want[0]}`);
    const dots = isas.includes("avx2") ? (["auto", "vnni-emulated"] as const) : (["auto"] as const);
    try {
      for (const isa of isas) {
        assert.ok(native!.setIsa(isa));
        for (const dot of dots) {
          assert.ok(native!.setQuantDot(dot));
          for (const run of [q4, native!.packQ4(q4), q8]) {
            const err = relL2(native!.linear(x, rows, run), run === q8 ? want8 : want);
            assert.ok(err <= 1e-5, `${isa} ${dot} ${run.dtype} extremes: relative L2 ${err.toExponential(3)}`);
          }
        }
      }
    } finally {
      native!.setQuantDot("auto");
      native!.setIsa(initial!);
    }
  });

  test("q8 and q4 errors on uniform weights stay at the theory's 1/127 and 1/15 of the signal", () => {
    const w = randomWeight("F32", 256, 960, 21);
    const x = randomArray(4 * 960, 22);
    const exact = native!.linearF32(x, 4, w);
    const e8 = relL2(native!.linear(x, 4, quantizeReference(w, "q8")), exact);
    const e4 = relL2(native!.linear(x, 4, quantizeReference(w, "q4")), exact);
    // Uniform weights: a code step is 2/127 (q8) or 2/15 (q4) of the block's half-range a, its
    // rounding error step/sqrt(12), the weights' spread a/sqrt(3): relative error 1/127 and 1/15.
    assert.ok(e8 < 1.15 / 127, `q8 relL2 ${e8}`);
    assert.ok(e4 < 1.1 / 15, `q4 relL2 ${e4}`);
    assert.ok(e8 < e4);
  });

  test("linearMany: several quantized weights on one input give each one's linear (1 to 20 rows, with and without bias)", () => {
    for (const layout of LAYOUTS) {
      for (const rows of [1, 3, 8, 9, 20]) {
        const ws = [70, 9, 33].map((out, i) => layout.make(randomWeight("BF16", out, 96, out + i)));
        const biases = [null, randomArray(9, 4), null];
        const x = randomArray(rows * 96, rows, 2);
        const got = native!.linearMany(x, rows, ws.map((w) => w.run), biases);
        ws.forEach((w, i) => {
          const err = relL2(got[i]!, linearQuantizedReference(x, rows, w.ref, biases[i]));
          assert.ok(err <= 1e-5, `${layout.name} rows ${rows} weight ${i}: relative L2 ${err}`);
        });
      }
    }
    // Mixed kinds fall back to one call each.
    const mixed = [quantizeReference(randomWeight("F32", 8, 64, 1), "q8"), randomWeight("BF16", 8, 64, 2)];
    const x = randomArray(64, 3);
    const [a, b] = native!.linearMany(x, 1, mixed);
    assert.deepEqual(a, native!.linear(x, 1, mixed[0]!));
    assert.deepEqual(b, native!.linear(x, 1, mixed[1]!));
  });

  test("bad arguments are range errors that name them", () => {
    const w = quantizeReference(randomWeight("F32", 4, 64, 1), "q4");
    assert.throws(() => native!.linear(new Float32Array(10), 1, w), /expected 1x64/);
    const wrongCodes = { ...w, data: new Int8Array(w.data.length) } as unknown as QuantizedTensor;
    assert.throws(() => native!.linear(new Float32Array(64), 1, wrongCodes), /codes must be a Uint8Array/);
    const packed = native!.packQ4(w);
    assert.throws(() => native!.linear(new Float32Array(64), 1, { ...packed, data: packed.data.subarray(1) }), /packed Q4_1x4 weight has 159 elements, needs at least 160/);
    assert.throws(() => native!.packQ4(quantizeReference(randomWeight("F32", 4, 64, 1), "q8")), /expects a Q4_1 weight/);
  });

  test("packForDecoding repacks Q4_1 weights where that is faster, and nothing else; the reference refuses packed weights", () => {
    const q4 = quantizeReference(randomWeight("F32", 6, 64, 3), "q4");
    const q8 = quantizeReference(randomWeight("F32", 6, 64, 3), "q8");
    const bf16 = randomWeight("BF16", 6, 64, 3);
    const packed = native!.packForDecoding!(q4);
    assert.equal(packed.dtype, native!.info().packedQ4 ? "Q4_1x4" : "Q4_1");
    assert.equal(native!.packForDecoding!(q8), q8);
    assert.equal(native!.packForDecoding!(bf16), bf16);
    if (native!.info().packedQ4) assert.deepEqual(packed.data, native!.packQ4(q4).data, "the arena's copy is packed as packQ4 packs");
    assert.equal(native!.packQ4(q4).data.length, 2 * 1 * 160, "6 rows: 2 groups of 4, 1 pair of blocks, 160 bytes each");
    const x = randomArray(64, 4);
    assert.ok(relL2(native!.linear(x, 1, packed), linearQuantizedReference(x, 1, q4, null)) <= 1e-5);
    assert.throws(() => tsKernels.linear(x, 1, native!.packQ4(q4)), /Q4_1x4 weight .* needs the native kernels/);
  });
});

/** The addon's own functions, for their argument checks (as native-kernels.ts finds it). */
function rawAddon(): unknown {
  const path = process.env.SMOLVLM_NATIVE_PATH ?? join(dirname(fileURLToPath(import.meta.url)), "..", "..", "build", "Release", "smolvlm_native.node");
  return createRequire(import.meta.url)(resolve(path));
}

describe("pages: allocPages, copyAndRelease, dropFileCache", { skip }, () => {
  test("allocPages gives zeroed memory of the size asked for, and names a bad size", () => {
    const addon = rawAddon() as { allocPages(bytes: number): ArrayBuffer };
    const pages = addon.allocPages(3 << 20);
    assert.equal(pages.byteLength, 3 << 20);
    assert.ok(new Uint8Array(pages).every((b) => b === 0), "zeroed");
    new Uint8Array(pages).fill(7, 1 << 20, 2 << 20);
    assert.throws(() => addon.allocPages(0), /allocPages: expects a byte count/);
    assert.throws(() => addon.allocPages(Number.NaN), /allocPages: expects a byte count/);
  });

  test("copyAndRelease copies out of a mapped file only, and names what is wrong with its arguments", () => {
    const dir = mkdtempSync(join(tmpdir(), "smolvlm-copy-"));
    try {
      const w = randomWeight("BF16", 3000, 1024, 6); // 6 MiB: mapped, not copied, by SafetensorsFile
      const file = join(dir, "w.safetensors");
      writeFileSync(file, encodeSafetensors({ w }));
      const mapped = SafetensorsFile.open(file).read("w").data as Uint16Array;
      const row = new Uint16Array(1024);
      assert.equal(copyAndRelease(mapped.subarray(2048 * 1024, 2049 * 1024), row), process.platform !== "win32");
      assert.deepEqual(row, (w.data as Uint16Array).subarray(2048 * 1024, 2049 * 1024));
      assert.deepEqual(mapped, w.data, "the released blocks read the same afterwards");
      assert.equal(copyAndRelease(new Uint16Array(4), new Uint16Array(4)), false, "heap memory: nothing done");
      const addon = rawAddon() as { copyAndRelease(src: unknown, dst: unknown): boolean };
      assert.throws(() => addon.copyAndRelease(mapped.subarray(0, 4), new Uint16Array(5)), /copyAndRelease: source and destination differ in size/);
      assert.throws(() => addon.copyAndRelease([1], new Uint16Array(1)), /copyAndRelease: expects two typed arrays/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("dropFileCache leaves the file as it was, mapped or read; a missing file is only a false", () => {
    const dir = mkdtempSync(join(tmpdir(), "smolvlm-drop-"));
    try {
      const w = randomWeight("BF16", 1100, 1024, 5); // 2.1 MiB: one whole 2 MiB page and a tail
      const file = join(dir, "w.safetensors");
      writeFileSync(file, encodeSafetensors({ w }));
      assert.equal(dropFileCache(file), process.platform === "linux");
      assert.deepEqual(SafetensorsFile.open(file).read("w").data, w.data);
      assert.equal(dropFileCache(join(dir, "missing.safetensors")), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("settlePageCache", { skip }, () => {
  test("reads a file just written back in 2 MiB folios where the kernel can, once, and leaves its bytes as they were", () => {
    const dir = mkdtempSync(join(tmpdir(), "smolvlm-settle-"));
    try {
      const w = randomWeight("BF16", 10240, 1024, 11); // 20 MiB: 10 whole 2 MiB blocks
      const bytes = encodeSafetensors({ w });
      const file = join(dir, "w.safetensors");
      // Written in small pieces, as a copy or a download writes: the page cache holds it in small folios.
      const fd = openSync(file, "w");
      for (let at = 0; at < bytes.length; at += 64 << 10) writeSync(fd, bytes, at, Math.min(64 << 10, bytes.length - at));
      closeSync(fd);
      const first = settlePageCache(new Uint8Array(mapFile(file)!), file)!;
      assert.ok(["huge", "repaired", "small", "unknown"].includes(first.state), first.state);
      if (process.platform !== "linux") assert.equal(first.state, "unknown");
      if (first.state === "huge" || first.state === "repaired") {
        assert.equal(first.blocks, Math.floor(bytes.length / (2 << 20)));
        assert.ok(first.small * 8 <= first.blocks);
        const second = settlePageCache(new Uint8Array(mapFile(file)!), file)!;
        assert.deepEqual([second.state, second.repaired], ["huge", 0], "read back once: the next process finds it right");
      }
      const view = new Uint8Array(mapFile(file)!);
      assert.ok(Buffer.from(view.buffer, view.byteOffset, view.byteLength).equals(Buffer.from(bytes)), "the file reads the same");
      assert.deepEqual(SafetensorsFile.open(file).read("w").data, w.data);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("does nothing to memory that is not a whole mapFile mapping, and names bad arguments", () => {
    const none = { state: "unknown", blocks: 0, small: 0, repaired: 0 };
    assert.deepEqual(settlePageCache(new Uint8Array(4 << 20), "/nonexistent"), none);
    const addon = rawAddon() as { settlePageCache(view: unknown, path: unknown): unknown };
    assert.throws(() => addon.settlePageCache([1], "x"), /settlePageCache: expects the mapFile view of a whole file and its path/);
    assert.throws(() => addon.settlePageCache(new Uint8Array(4), 3), /settlePageCache: expects the mapFile view/);
  });

  test("SafetensorsFile checks only files large enough to be streamed weights", () => {
    const dir = mkdtempSync(join(tmpdir(), "smolvlm-settle-"));
    try {
      const file = join(dir, "w.safetensors");
      writeFileSync(file, encodeSafetensors({ w: randomWeight("BF16", 64, 64, 12) }));
      assert.equal(SafetensorsFile.open(file).pageCache, null);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("releasePages", { skip }, () => {
  test("gives back the pages of a mapped tensor, which still reads the same; ordinary memory is left alone", () => {
    const dir = mkdtempSync(join(tmpdir(), "smolvlm-release-"));
    try {
      const w = randomWeight("BF16", 512, 1024, 9); // 1 MiB
      const file = join(dir, "w.safetensors");
      writeFileSync(file, encodeSafetensors({ w }));
      const mapped = SafetensorsFile.open(file).read("w");
      const before = Buffer.from(new Uint8Array(mapped.data.buffer, mapped.data.byteOffset, mapped.data.byteLength));
      const copy = Buffer.from(before);
      assert.ok(releasePages(mapped.data) >= 1024 * 1024 - 2 * 4096);
      assert.ok(Buffer.from(new Uint8Array(mapped.data.buffer, mapped.data.byteOffset, mapped.data.byteLength)).equals(copy));
      const heap = new Uint16Array(1 << 20).fill(7);
      assert.equal(releasePages(heap), 0);
      assert.equal(heap[12345], 7);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
