/**
 * The inference worker thread: it owns the SmolVLM and runs every request's stream on it, so
 * the model's arithmetic (synchronous, seconds long for an image) never blocks the HTTP thread.
 * Concurrent requests are batched by the library's engine; a cancel message aborts a stream at
 * once, which frees its engine slot at the next step. A failing request is reported to the main
 * thread and never ends the worker. See worker-client.ts for the message protocol.
 */
import { readlinkSync } from "node:fs";
import { getPriority, setPriority } from "node:os";
import { parentPort, workerData } from "node:worker_threads";
import { SmolVLM } from "../smolvlm.js";
import { SmolVLMError } from "../errors.js";
import type { FromWorker, SerializedError, ToWorker, WorkerJob, WorkerMemory, WorkerSettings } from "./worker-client.js";

const port = parentPort!;
const settings = workerData as WorkerSettings;
const post = (msg: FromWorker) => port.postMessage(msg);

function serialize(e: unknown): SerializedError {
  if (e instanceof SmolVLMError) return { name: e.name, message: e.message, code: e.code };
  if (e instanceof Error) return { name: e.name, message: e.message };
  return { name: "Error", message: String(e) };
}

/**
 * On Linux a thread is a task with its own nice value: this thread (and any compute threads it
 * starts, which inherit it) runs a little below the HTTP thread, so on a machine with every core
 * busy the scheduler still wakes the HTTP thread promptly. Elsewhere this is skipped.
 */
function lowerOwnPriority(by: number): void {
  try {
    const tid = Number(readlinkSync("/proc/thread-self").split("/").pop());
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, Math.min(19, getPriority(tid) + by));
  } catch {
    // no /proc/thread-self, or not permitted: run at the process's priority
  }
}
if (settings.niceness) lowerOwnPriority(settings.niceness);

let vlm: SmolVLM;
try {
  vlm = await SmolVLM.load(settings.modelDir, { engine: settings.engine, dtype: settings.dtype });
} catch (e) {
  post({ type: "fatal", message: e instanceof Error ? e.message : String(e) });
  process.exit(1);
}

const running = new Map<number, AbortController>();
let loadTimer: NodeJS.Timeout | null = null;

function memory(): WorkerMemory {
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers };
}

function reportLoad(): void {
  post({ type: "load", ...vlm.engine.load, memory: memory() });
  // While requests run, the engine admits and finishes sequences on its own: keep reporting.
  if (running.size > 0 && !loadTimer) {
    loadTimer = setInterval(() => {
      post({ type: "load", ...vlm.engine.load, memory: memory() });
      if (running.size === 0) {
        clearInterval(loadTimer!);
        loadTimer = null;
      }
    }, 250);
    loadTimer.unref();
  }
}

async function run(id: number, job: WorkerJob): Promise<void> {
  const controller = new AbortController();
  running.set(id, controller);
  try {
    const options = { ...job.options, signal: controller.signal };
    // Without max_tokens the library takes the checkpoint's default (clamped to the context);
    // a default above the server's cap becomes the cap.
    if (options.maxNewTokens === undefined && (vlm.generationDefaults.maxNewTokens ?? 512) > job.maxTokensCap) options.maxNewTokens = job.maxTokensCap;
    const stream = vlm.stream(job.request, options);
    reportLoad();
    let step = await stream.next();
    while (!step.done) {
      if (step.value) post({ type: "delta", id, text: step.value });
      step = await stream.next();
    }
    const r = step.value;
    post({
      type: "done",
      id,
      summary: {
        finishReason: r.finishReason,
        promptTokens: r.promptTokenIds.length,
        completionTokens: r.tokenIds.length,
        cachedTokens: r.timings.cached_tokens,
        ttftMs: r.timings.ttft_ms,
        totalMs: r.timings.total_ms,
      },
    });
  } catch (e) {
    post({ type: "error", id, error: serialize(e) });
  } finally {
    running.delete(id);
    reportLoad();
  }
}

port.on("message", (msg: ToWorker) => {
  switch (msg.type) {
    case "submit":
      void run(msg.id, msg.job);
      return;
    case "cancel":
      running.get(msg.id)?.abort();
      return;
    case "gc":
      (globalThis as { gc?: () => void }).gc?.();
      reportLoad();
      return;
  }
});

post({ type: "ready", contextLength: vlm.config.text.maxPositionEmbeddings, loadMs: vlm.loadMs });
reportLoad();
