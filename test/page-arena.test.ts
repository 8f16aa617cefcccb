import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { PageArena } from "../src/backend/page-arena.js";

/** An allocator that records what it was asked for. */
function recording(): { allocate: (bytes: number) => ArrayBuffer; sizes: number[] } {
  const sizes: number[] = [];
  return { sizes, allocate: (bytes) => (sizes.push(bytes), new ArrayBuffer(bytes)) };
}

describe("PageArena", () => {
  test("packs arrays into shared blocks at cache-line offsets, and opens a new block when one is full", () => {
    const r = recording();
    const arena = new PageArena(r.allocate, 1024);
    const a = arena.take(Uint16Array, 3);
    const b = arena.take(Float32Array, 10);
    assert.equal(a.buffer, b.buffer);
    assert.equal(a.byteOffset, 0);
    assert.equal(b.byteOffset, 64, "after 6 bytes, the next cache line");
    const c = arena.take(Uint8Array, 1000); // 104 + 1000 > 1024
    assert.notEqual(c.buffer, a.buffer);
    assert.equal(c.byteOffset, 0);
    assert.deepEqual(r.sizes, [1024, 1024]);
  });

  test("gives an array at least a block's size its own block and keeps filling the shared one", () => {
    const r = recording();
    const arena = new PageArena(r.allocate, 256);
    const small = arena.take(Uint8Array, 10);
    const big = arena.take(Float32Array, 100);
    const next = arena.take(Uint8Array, 10);
    assert.equal(big.byteLength, 400);
    assert.notEqual(big.buffer, small.buffer);
    assert.equal(next.buffer, small.buffer);
    assert.equal(next.byteOffset, 64);
    assert.deepEqual(r.sizes, [256, 400]);
  });
});
