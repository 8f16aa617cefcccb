/**
 * The main thread's side of the inference worker: it starts the worker thread that owns the
 * model, submits requests and cancellations to it, routes its streamed deltas back to each
 * request's callbacks, and restarts it if it dies (every request it held fails with a 500; those
 * submitted while it restarts wait for the new one).
 *
 * Message protocol (structured clone over the worker's port):
 *   main -> worker  {type: "submit", id, request, options}   request.images are bytes (transferred)
 *                   {type: "cancel", id}                      abort that request's stream now
 *                   {type: "gc"}                              collect garbage, if --expose-gc is on
 *   worker -> main  {type: "ready", contextLength, loadMs}    the model is loaded
 *                   {type: "delta", id, text}                 generated text
 *                   {type: "done", id, summary}               the request ended (finish reason, counts)
 *                   {type: "error", id, error}                it failed; the error is serialized
 *                   {type: "load", active, waiting, memory}   the engine's load and the worker's heap, when they change
 *                   {type: "fatal", message}                  loading the model failed
 */
import type { DTypeMode } from "../smolvlm.js";
import { EventEmitter } from "node:events";
import { Worker } from "node:worker_threads";
import type { ChatRequest, FinishReason, GenerateOptions } from "../smolvlm.js";
import type { EngineConfig } from "../generation/engine.js";

/** What crosses to the worker: the request with images as bytes, options without the signal. */
export interface WorkerJob {
  request: Omit<ChatRequest, "images"> & { images: Uint8Array[] };
  options: Omit<GenerateOptions, "signal" | "returnPromptLogits">;
  /** Without maxNewTokens, the checkpoint's default is used, but never more than this. */
  maxTokensCap: number;
}

export interface JobSummary {
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
  ttftMs: number;
  totalMs: number;
}

/** An error as it crosses the thread boundary. */
export interface SerializedError {
  name: string;
  message: string;
  /** SmolVLMError's code, or "worker_crashed" / "worker_restarting" from this side. */
  code?: string;
}

export type ToWorker = { type: "submit"; id: number; job: WorkerJob } | { type: "cancel"; id: number } | { type: "gc" };

export type FromWorker =
  | { type: "ready"; contextLength: number; loadMs: number }
  | { type: "delta"; id: number; text: string }
  | { type: "done"; id: number; summary: JobSummary }
  | { type: "error"; id: number; error: SerializedError }
  | { type: "load"; active: number; waiting: number; memory: WorkerMemory }
  | { type: "fatal"; message: string };

/** The worker isolate's own memory (the process RSS covers both threads). */
export interface WorkerMemory {
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

export interface JobCallbacks {
  onDelta(text: string): void;
  onDone(summary: JobSummary): void;
  onError(error: SerializedError): void;
}

export interface WorkerSettings {
  modelDir: string;
  dtype?: DTypeMode;
  engine: Partial<EngineConfig>;
  /** How much lower than the HTTP thread the inference thread runs (Linux nice levels; 0: same). */
  niceness?: number;
}

export type WorkerState = "starting" | "ready" | "restarting" | "closed";

interface Job {
  job: WorkerJob;
  callbacks: JobCallbacks;
  /** Sent to the current worker (false while waiting for a restart). */
  sent: boolean;
}

const WORKER_URL = new URL("./worker.js", import.meta.url);

export class WorkerClient extends EventEmitter {
  private worker: Worker | null = null;
  private readonly jobs = new Map<number, Job>();
  private nextId = 1;
  private restartDelayMs = 250;
  private restartTimer: NodeJS.Timeout | null = null;
  state: WorkerState = "starting";
  restarts = 0;
  contextLength = 0;
  /** The engine's last reported load, and the worker's memory. */
  engineLoad = { active: 0, waiting: 0 };
  workerMemory: WorkerMemory = { heapUsed: 0, external: 0, arrayBuffers: 0 };

  constructor(private readonly settings: WorkerSettings) {
    super();
  }

  /** Starts the worker; resolves once the model is loaded, rejects if loading fails. */
  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.spawn((err) => (err ? reject(err) : resolve()));
    });
  }

  /** Requests submitted and not yet finished (sent to the worker or waiting for it). */
  get inFlight(): number {
    return this.jobs.size;
  }

  /** Hands a request to the worker; returns an id for cancel(). Callbacks run exactly once at the end. */
  submit(job: WorkerJob, callbacks: JobCallbacks): number {
    const id = this.nextId++;
    const entry: Job = { job, callbacks, sent: false };
    this.jobs.set(id, entry);
    if (this.state === "ready") this.send(id, entry);
    return id;
  }

  /** Aborts a request: the worker ends its stream at once and the engine frees its slot. */
  cancel(id: number): void {
    const entry = this.jobs.get(id);
    if (!entry) return;
    if (entry.sent) {
      this.worker?.postMessage({ type: "cancel", id } satisfies ToWorker);
    } else {
      this.jobs.delete(id);
      entry.callbacks.onDone({ finishReason: "abort", promptTokens: 0, completionTokens: 0, cachedTokens: 0, ttftMs: 0, totalMs: 0 });
    }
  }

  /** Asks both threads to collect garbage (only where node runs with --expose-gc). */
  collectGarbage(): void {
    this.worker?.postMessage({ type: "gc" } satisfies ToWorker);
    (globalThis as { gc?: () => void }).gc?.();
  }

  /** Stops the worker as if it had crashed (tests use this); it is restarted. */
  async kill(): Promise<void> {
    await this.worker?.terminate();
  }

  async close(): Promise<void> {
    this.state = "closed";
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const worker = this.worker;
    this.worker = null;
    this.failAll({ name: "Error", message: "the server is shutting down", code: "shutting_down" });
    await worker?.terminate();
  }

  private send(id: number, entry: Job): void {
    entry.sent = true;
    // Image bytes move to the worker without a copy (each image has a buffer of its own).
    const buffers = [...new Set(entry.job.request.images.map((b) => b.buffer))].filter((b): b is ArrayBuffer => b instanceof ArrayBuffer);
    try {
      this.worker!.postMessage({ type: "submit", id, job: entry.job } satisfies ToWorker, buffers);
    } catch (e) {
      this.jobs.delete(id);
      entry.callbacks.onError({ name: "Error", message: `the request could not be handed to the inference worker: ${(e as Error).message}` });
    }
  }

  private spawn(started?: (err?: Error) => void): void {
    const worker = new Worker(WORKER_URL, { workerData: this.settings });
    this.worker = worker;
    const initial = started !== undefined;
    let ready = false;
    worker.on("message", (msg: FromWorker) => {
      if (this.worker !== worker) return;
      switch (msg.type) {
        case "ready":
          ready = true;
          this.state = "ready";
          this.contextLength = msg.contextLength;
          this.restartDelayMs = 250;
          for (const [id, entry] of this.jobs) if (!entry.sent) this.send(id, entry);
          this.emit("ready");
          started?.();
          return;
        case "fatal":
          // Loading failed: the worker exits next; the exit handler decides what follows.
          if (initial) started?.(new Error(msg.message));
          else this.emit("log", `inference worker failed to load the model: ${msg.message}`);
          return;
        case "load":
          this.engineLoad = { active: msg.active, waiting: msg.waiting };
          this.workerMemory = msg.memory;
          return;
        case "delta":
          this.jobs.get(msg.id)?.callbacks.onDelta(msg.text);
          return;
        case "done":
        case "error": {
          const entry = this.jobs.get(msg.id);
          if (!entry) return;
          this.jobs.delete(msg.id);
          if (msg.type === "done") entry.callbacks.onDone(msg.summary);
          else entry.callbacks.onError(msg.error);
          return;
        }
      }
    });
    worker.on("error", (err) => {
      if (this.worker === worker) this.emit("log", `inference worker error: ${err.stack ?? err.message}`);
    });
    worker.on("exit", (code) => {
      if (this.worker !== worker || this.state === "closed") return;
      this.worker = null;
      this.engineLoad = { active: 0, waiting: 0 };
      if (!ready && initial) {
        // The first start failed (start() rejected with the reason): nothing to restart.
        started?.(new Error(`the inference worker exited (code ${code}) before the model was loaded`));
        this.state = "closed";
        return;
      }
      // Requests the dead worker held are lost; those not yet sent wait for the new one.
      for (const [id, entry] of this.jobs) {
        if (!entry.sent) continue;
        this.jobs.delete(id);
        entry.callbacks.onError({ name: "Error", message: `the inference worker stopped unexpectedly (exit code ${code}); the request was not completed`, code: "worker_crashed" });
      }
      this.state = "restarting";
      this.restarts++;
      this.emit("log", `inference worker exited with code ${code}; restarting it (restart ${this.restarts})`);
      const delay = ready ? 0 : this.restartDelayMs;
      if (!ready) {
        // A worker that could not even load: back off, and do not keep requests waiting on it.
        this.restartDelayMs = Math.min(this.restartDelayMs * 2, 30_000);
        this.failAll({ name: "Error", message: "the inference worker is restarting; try again shortly", code: "worker_restarting" });
      }
      this.restartTimer = setTimeout(() => {
        this.restartTimer = null;
        if (this.state !== "closed") this.spawn();
      }, delay);
    });
  }

  private failAll(error: SerializedError): void {
    const jobs = [...this.jobs.values()];
    this.jobs.clear();
    for (const entry of jobs) entry.callbacks.onError(error);
  }
}
