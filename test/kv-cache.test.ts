/** The KV cache: growth, prefix copies, and bf16 storage (rounded to nearest even as written). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { KVCache } from "../src/model/kv-cache.js";
import { bf16ToF32, f32ToBf16 } from "../src/backend/dtype.js";
import { randomArray } from "./helpers.js";

test("a bf16 cache stores each key and value rounded to nearest even, and grows keeping them", () => {
  const cache = new KVCache(2, 2, 4, 1, "BF16"); // rows of 8 values
  const k = randomArray(3 * 8, 1, 3);
  const v = randomArray(3 * 8, 2, 3);
  k[0] = 1 + 2 ** -8; // a tie: rounds to even (1)
  k[1] = 1 + 3 * 2 ** -8; // a tie: rounds up to even
  k[2] = NaN;
  cache.write(1, 0, k, v, 3);
  cache.length = 3;
  assert.ok(cache.layerKeys(1) instanceof Uint16Array);
  const rows = (which: "keys" | "values") => Uint16Array.from([0, 1, 2].flatMap((t) => [...cache.position(1, which, t)]));
  const keys = rows("keys");
  assert.equal(bf16ToF32(keys[0]!), 1);
  assert.equal(bf16ToF32(keys[1]!), 1 + 2 ** -6);
  assert.ok(Number.isNaN(bf16ToF32(keys[2]!)));
  for (let i = 3; i < 24; i++) assert.equal(keys[i], f32ToBf16(k[i]!));
  const values = rows("values");
  for (let i = 0; i < 24; i++) assert.equal(values[i], f32ToBf16(v[i]!));
  assert.equal(cache.bytesUsed(), 4 * 8 * 2 * 2 * 2); // capacity grew 1 -> 4 positions
});

test("a bf16 cache holds half the bytes of a float32 one; prefix copies need the same dtype", () => {
  const f = new KVCache(3, 5, 64, 100, "F32");
  const b = new KVCache(3, 5, 64, 100, "BF16");
  assert.equal(f.bytesUsed(), 2 * b.bytesUsed());
  assert.throws(() => b.copyPrefixFrom(f, 0), /different/);
  const other = new KVCache(3, 5, 64, 10, "BF16");
  other.write(0, 0, randomArray(320 * 4, 3), randomArray(320 * 4, 4), 4);
  other.length = 4;
  b.copyPrefixFrom(other, 4);
  assert.equal(b.length, 4);
  for (let t = 0; t < 4; t++) {
    assert.deepEqual(b.position(0, "keys", t), other.position(0, "keys", t));
    assert.deepEqual(b.position(0, "values", t), other.position(0, "values", t));
  }
});

test("storage is head-major: each head's positions contiguous, as layout() says, through growth and shrinking", () => {
  const heads = 3, dim = 4, row = heads * dim;
  const cache = new KVCache(1, heads, dim, 2, "F32");
  const k = Float32Array.from({ length: 5 * row }, (_, i) => i);
  const v = Float32Array.from({ length: 5 * row }, (_, i) => -i);
  cache.write(0, 0, k, v, 2);
  cache.length = 2;
  cache.write(0, 2, k.subarray(2 * row), v.subarray(2 * row), 3); // grows 2 -> 8 positions
  cache.length = 5;
  const check = () => {
    const { kvRowStride, kvHeadStride } = cache.layout();
    assert.equal(kvRowStride, dim);
    for (let t = 0; t < 5; t++) {
      for (let h = 0; h < heads; h++) {
        for (let d = 0; d < dim; d++) {
          assert.equal(cache.layerKeys(0)[t * kvRowStride + h * kvHeadStride + d], k[t * row + h * dim + d]);
          assert.equal(cache.layerValues(0)[t * kvRowStride + h * kvHeadStride + d], v[t * row + h * dim + d]);
        }
      }
    }
  };
  check();
  assert.equal(cache.layout().kvHeadStride, 8 * dim);
  cache.shrinkToFit();
  assert.equal(cache.layout().kvHeadStride, 5 * dim);
  check();
});
