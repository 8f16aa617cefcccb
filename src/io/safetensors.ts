/**
 * safetensors reader. Tensors keep the checkpoint's dtype (BF16/F16 stay 16-bit: no float32 copy
 * of the model). With the native addon the file is memory-mapped and every aligned tensor is a
 * view into the mapping (weights are used in place from the page cache); otherwise, or for a
 * misaligned tensor, each tensor is read into its own array.
 *
 * Float tensors (F32/BF16/F16) are `Tensor`s; the 8-bit integer tensors of a quantized checkpoint
 * (I8/U8, src/quant/format.ts) are read apart, as `IntTensor`s, so that code taking a `Tensor`
 * never meets integer data.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { SmolVLMError } from "../errors.js";
import { mapFile, copyAndRelease, settlePageCache, type PageCacheReport } from "../backend/native-kernels.js";

/**
 * Tensors smaller than this are copied out of a mapped file rather than viewed (see view): norms
 * and biases. Weights stay views, the 500M geometry's k/v projections (600 KB) included: copying
 * those 64 out cost 110-150 ms of load and 48 MiB of peak RSS (BENCHMARKS.md section 17).
 */
const SMALL_TENSOR_BYTES = 1 << 18;

export type DType = "F32" | "BF16" | "F16";
export type IntDType = "I8" | "U8";
/** Every dtype this package reads and writes. */
export type StoredDType = DType | IntDType;

export interface Tensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** F32 -> Float32Array; BF16/F16 -> raw 16-bit words. */
  readonly data: Float32Array | Uint16Array;
}

/** An 8-bit integer tensor: I8 -> Int8Array, U8 -> Uint8Array. */
export interface IntTensor {
  readonly dtype: IntDType;
  readonly shape: readonly number[];
  readonly data: Int8Array | Uint8Array;
}

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

export const BYTES_PER_ELEMENT: Record<StoredDType, number> = { F32: 4, BF16: 2, F16: 2, I8: 1, U8: 1 };
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

function fail(file: string, message: string): never {
  throw new SmolVLMError("bad_weights", message, file);
}

/** Where the bytes come from: a memory mapping of the whole file, or reads from a descriptor. */
type Source = { mapped: Uint8Array } | { fd: number };

/** Reads exactly `length` bytes at `position`, or fails with a message naming the file. */
function readExactly(source: Source, file: string, target: Uint8Array, position: number): void {
  if ("mapped" in source) {
    if (position + target.byteLength > source.mapped.byteLength) fail(file, `file ends early while reading ${target.byteLength} bytes at offset ${position} (truncated download?)`);
    target.set(source.mapped.subarray(position, position + target.byteLength));
    return;
  }
  const fd = source.fd;
  let done = 0;
  while (done < target.byteLength) {
    const n = readSync(fd, target, done, target.byteLength - done, position + done);
    if (n === 0) fail(file, `file ends early while reading ${target.byteLength} bytes at offset ${position} (truncated download?)`);
    done += n;
  }
}

function parseHeader(fd: Source, file: string, fileSize: number): { entries: Map<string, HeaderEntry>; dataStart: number } {
  if (fileSize < 8) fail(file, `only ${fileSize} bytes: not a safetensors file (truncated?)`);
  const lenBuf = new Uint8Array(8);
  readExactly(fd, file, lenBuf, 0);
  const headerLen = Number(new DataView(lenBuf.buffer).getBigUint64(0, true));
  if (headerLen > MAX_HEADER_BYTES || 8 + headerLen > fileSize) {
    fail(file, `header length ${headerLen} runs past the end of the ${fileSize}-byte file (truncated or not safetensors)`);
  }
  const headerBytes = new Uint8Array(headerLen);
  readExactly(fd, file, headerBytes, 8);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder().decode(headerBytes));
  } catch (e) {
    fail(file, `header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) fail(file, "header is not a JSON object");
  const entries = new Map<string, HeaderEntry>();
  for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") continue;
    entries.set(name, validateEntry(file, name, value));
  }
  return { entries, dataStart: 8 + headerLen };
}

function validateEntry(file: string, name: string, value: unknown): HeaderEntry {
  const v = value as Partial<HeaderEntry> | null;
  if (!v || typeof v.dtype !== "string" || !Array.isArray(v.shape) || !Array.isArray(v.data_offsets) || v.data_offsets.length !== 2) {
    fail(file, `tensor "${name}" has a malformed header entry`);
  }
  if (!v.shape.every((d) => Number.isInteger(d) && d >= 0)) fail(file, `tensor "${name}" has an invalid shape ${JSON.stringify(v.shape)}`);
  const [begin, end] = v.data_offsets;
  if (!Number.isInteger(begin) || !Number.isInteger(end) || begin < 0 || end < begin) {
    fail(file, `tensor "${name}" has invalid data offsets ${JSON.stringify(v.data_offsets)}`);
  }
  return v as HeaderEntry;
}

/** Whether a header dtype is one of the float dtypes read as `Tensor`s. */
export function isFloat(dtype: string): dtype is DType {
  return dtype === "F32" || dtype === "BF16" || dtype === "F16";
}

function isInt(dtype: string): dtype is IntDType {
  return dtype === "I8" || dtype === "U8";
}

/** The constructors of the typed arrays tensors are read into. */
interface TypedArrayKind<T> {
  new (length: number): T;
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): T;
  readonly BYTES_PER_ELEMENT: number;
}

/**
 * Files from this size up get their page cache checked at open (settlePageCache, about 16 ms per
 * GB where it is already right): weight files this large are read in full by every request.
 */
const SETTLE_MIN_BYTES = 64 * 2 ** 20;

/** A lazily-read safetensors file: the header is parsed at open, tensors are read on demand. */
export class SafetensorsFile {
  readonly path: string;
  private readonly source: Source;
  private readonly entries: Map<string, HeaderEntry>;
  private readonly dataStart: number;
  private readonly fileSize: number;
  /** What settlePageCache found for a mapped file of at least SETTLE_MIN_BYTES; null otherwise. */
  readonly pageCache: PageCacheReport | null;

  private constructor(path: string, source: Source, fileSize: number, pageCache: PageCacheReport | null = null) {
    this.path = path;
    this.source = source;
    this.fileSize = fileSize;
    this.pageCache = pageCache;
    const { entries, dataStart } = parseHeader(source, path, fileSize);
    this.entries = entries;
    this.dataStart = dataStart;
  }

  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new SmolVLMError("bad_weights", code === "ENOENT" ? "weights file not found" : `cannot open weights (${code})`, path);
    }
    try {
      const size = fstatSync(fd).size;
      const mapped = size >= 8 && process.env.SMOLVLM_MMAP !== "0" ? mapFile(path) : null;
      if (!mapped) return new SafetensorsFile(path, { fd }, size);
      closeSync(fd); // the mapping keeps the file's pages reachable
      const view = new Uint8Array(mapped);
      // Before the header is read: the check unmaps what it maps, and no page may stay mapped
      // if the cache is to be dropped.
      const settle = size >= SETTLE_MIN_BYTES && process.env.SMOLVLM_PAGE_CACHE !== "keep";
      return new SafetensorsFile(path, { mapped: view }, size, settle ? settlePageCache(view, path) : null);
    } catch (e) {
      try {
        closeSync(fd);
      } catch {
        // already closed after mapping
      }
      throw e;
    }
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** A tensor's dtype (as written in the header, supported or not) and shape, without reading it. */
  info(name: string): { dtype: string; shape: readonly number[] } {
    const entry = this.entry(name);
    return { dtype: entry.dtype, shape: entry.shape };
  }

  /** A float tensor (F32, BF16, F16). */
  read(name: string): Tensor {
    const entry = this.entry(name);
    const dtype = entry.dtype;
    if (!isFloat(dtype)) fail(this.path, `tensor "${name}" has dtype ${dtype}; supported: F32, BF16, F16${isInt(dtype) ? " (an integer tensor of a quantized checkpoint, not a float one)" : ""}`);
    const { offset, count } = this.locate(name, entry, dtype);
    if (dtype === "F32") return { dtype, shape: entry.shape, data: this.view(offset, count, Float32Array) };
    return { dtype, shape: entry.shape, data: this.view(offset, count, Uint16Array) };
  }

  /** An 8-bit integer tensor (I8, U8): the codes of a quantized weight. */
  readInt(name: string): IntTensor {
    const entry = this.entry(name);
    const dtype = entry.dtype;
    if (!isInt(dtype)) fail(this.path, `tensor "${name}" has dtype ${dtype}; expected I8 or U8`);
    const { offset, count } = this.locate(name, entry, dtype);
    if (dtype === "I8") return { dtype, shape: entry.shape, data: this.view(offset, count, Int8Array) };
    return { dtype, shape: entry.shape, data: this.view(offset, count, Uint8Array) };
  }

  /** A tensor's bytes as stored, whatever its dtype (for copying it unchanged). */
  readBytes(name: string): Uint8Array {
    const entry = this.entry(name);
    if (!isFloat(entry.dtype) && !isInt(entry.dtype)) fail(this.path, `tensor "${name}" has dtype ${entry.dtype}; supported: F32, BF16, F16, I8, U8`);
    const { offset, count } = this.locate(name, entry, entry.dtype);
    return this.view(offset, count * BYTES_PER_ELEMENT[entry.dtype], Uint8Array);
  }

  private entry(name: string): HeaderEntry {
    const entry = this.entries.get(name);
    if (!entry) fail(this.path, `tensor "${name}" not found`);
    return entry;
  }

  /** Checks that the entry's byte range fits its shape and the file; returns where it starts. */
  private locate(name: string, entry: HeaderEntry, dtype: StoredDType): { offset: number; count: number } {
    const count = entry.shape.reduce((a, b) => a * b, 1);
    const [begin, end] = entry.data_offsets;
    const need = count * BYTES_PER_ELEMENT[dtype];
    if (end - begin !== need) {
      fail(this.path, `tensor "${name}" has ${end - begin} bytes but shape ${JSON.stringify(entry.shape)} of ${dtype} needs ${need}`);
    }
    if (this.dataStart + end > this.fileSize) {
      fail(this.path, `tensor "${name}" ends at byte ${this.dataStart + end}, past the end of the ${this.fileSize}-byte file (truncated?)`);
    }
    return { offset: this.dataStart + begin, count };
  }

  /** `count` elements at file `offset`: a view into the mapping when aligned, else a copy. */
  private view<T extends Float32Array | Uint16Array | Int8Array | Uint8Array>(offset: number, count: number, Kind: TypedArrayKind<T>): T {
    const width = Kind.BYTES_PER_ELEMENT;
    if ("mapped" in this.source && (this.source.mapped.byteOffset + offset) % width === 0) {
      const view = new Kind(this.source.mapped.buffer, this.source.mapped.byteOffset + offset, count);
      // A small tensor (a norm, a bias) is copied out instead, and its block of the mapping given
      // back: mapFile maps weights 2 MiB at a time where it can, so a view would keep its
      // neighbours resident too, even after a model quantized at load has released them.
      if (view.byteLength >= SMALL_TENSOR_BYTES) return view;
      const copy = new Kind(count);
      return copyAndRelease(view, copy) ? copy : view;
    }
    const data = new Kind(count);
    readExactly(this.source, this.path, new Uint8Array(data.buffer), offset);
    return data;
  }

  /** Releases the descriptor; a mapping stays alive for as long as tensors view it. */
  close(): void {
    if ("fd" in this.source) closeSync(this.source.fd);
  }
}

/** Writes tensors as a safetensors file in memory (used by tests to build small checkpoints). */
export function encodeSafetensors(tensors: Record<string, Tensor | IntTensor>, metadata: Record<string, string> = { format: "pt" }): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const bytes = t.data.byteLength;
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  while ((8 + new TextEncoder().encode(json).length) % 8 !== 0) json += " ";
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let pos = 8 + headerBytes.length;
  for (const t of Object.values(tensors)) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), pos);
    pos += t.data.byteLength;
  }
  return out;
}
