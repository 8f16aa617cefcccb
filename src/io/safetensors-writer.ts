/**
 * Streaming safetensors writer: the header goes first (every offset follows from the tensor list,
 * so it is known before any data exists), then each tensor's bytes as the caller produces them.
 * Only one tensor's bytes are in memory at a time, so a model can be converted tensor by tensor.
 * The file is written as `<file>.tmp` and renamed at the end: a failed or interrupted write never
 * leaves a file that looks complete.
 */
import { closeSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { SmolVLMError } from "../errors.js";
import { BYTES_PER_ELEMENT, type StoredDType } from "./safetensors.js";

/** One tensor of the file to be: its bytes come later, in this order. */
export interface TensorSpec {
  readonly name: string;
  readonly dtype: StoredDType;
  readonly shape: readonly number[];
}

export function specBytes(spec: TensorSpec): number {
  return spec.shape.reduce((a, b) => a * b, 1) * BYTES_PER_ELEMENT[spec.dtype];
}

/** The header bytes (length prefix included), padded with spaces to a multiple of 8 as encodeSafetensors does. */
export function encodeHeader(specs: readonly TensorSpec[], metadata: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const s of specs) {
    if (s.name in header) throw new RangeError(`safetensors: tensor "${s.name}" is listed twice`);
    const bytes = specBytes(s);
    header[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  // The header's length is counted in UTF-8 bytes (tensor names may hold any character).
  while ((8 + Buffer.byteLength(json)) % 8 !== 0) json += " ";
  const text = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + text.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(text.length), true);
  out.set(text, 8);
  return out;
}

function writeAll(fd: number, view: ArrayBufferView): void {
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  let done = 0;
  while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done);
}

/**
 * Writes `specs` to `path`. `data` yields each tensor's bytes in spec order: one view per tensor,
 * whose byte length must be exactly what the spec's dtype and shape need. A view is written as soon
 * as it is yielded, so the producer may reuse or drop it right after. Returns the file's size.
 */
export function writeSafetensors(path: string, specs: readonly TensorSpec[], data: Iterable<ArrayBufferView>, metadata: Record<string, string> = { format: "pt" }): number {
  const header = encodeHeader(specs, metadata);
  const tmp = `${path}.tmp`;
  let fd: number;
  try {
    fd = openSync(tmp, "w");
  } catch (e) {
    throw new SmolVLMError("bad_request", `cannot write (${(e as NodeJS.ErrnoException).code})`, tmp);
  }
  let ok = false;
  try {
    writeAll(fd, header);
    writeData(fd, specs, data);
    ok = true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === "string" && code.startsWith("E")) throw new SmolVLMError("bad_request", `cannot write (${code}: ${(e as Error).message})`, tmp);
    throw e;
  } finally {
    closeSync(fd);
    if (!ok) rmSync(tmp, { force: true });
  }
  renameSync(tmp, path);
  return header.byteLength + specs.reduce((n, s) => n + specBytes(s), 0);
}

/** Writes each spec's bytes from `data`, checking that every tensor gets exactly its size. */
function writeData(fd: number, specs: readonly TensorSpec[], data: Iterable<ArrayBufferView>): void {
  const it = data[Symbol.iterator]();
  try {
    specs.forEach((spec, i) => {
      const next = it.next();
      if (next.done) throw new RangeError(`safetensors writer: no data for tensor "${spec.name}" (the data ended after ${i} of ${specs.length} tensors)`);
      const need = specBytes(spec);
      if (next.value.byteLength !== need) {
        throw new RangeError(`safetensors writer: tensor "${spec.name}" (${spec.dtype} ${JSON.stringify(spec.shape)}) needs ${need} bytes, got ${next.value.byteLength}`);
      }
      writeAll(fd, next.value);
    });
    if (!it.next().done) throw new RangeError(`safetensors writer: more data than the ${specs.length} tensors listed`);
  } finally {
    it.return?.(); // lets a generator that is left early run its own clean-up
  }
}
