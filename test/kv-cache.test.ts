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
  const keys = cache.layerKeys(1);
  assert.ok(keys instanceof Uint16Array);
  assert.equal(bf16ToF32(keys[0]!), 1);
  assert.equal(bf16ToF32(keys[1]!), 1 + 2 ** -6);
  assert.ok(Number.isNaN(bf16ToF32(keys[2]!)));
  for (let i = 3; i < 24; i++) assert.equal(keys[i], f32ToBf16(k[i]!));
  for (let i = 0; i < 24; i++) assert.equal(cache.layerValues(1)[i], f32ToBf16(v[i]!));
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
  assert.deepEqual(b.layerKeys(0).subarray(0, 1280), other.layerKeys(0).subarray(0, 1280));
});
