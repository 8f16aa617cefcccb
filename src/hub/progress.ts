/**
 * Download progress. On a terminal: one line redrawn in place, with a bar, bytes, speed and time left. Elsewhere
 * (a pipe, a log file, CI): plain lines, one when a file starts, a few while it runs, one when it ends.
 */

export interface ProgressSink {
  /** A file starts; `initial` bytes are already on disk (a resumed download). */
  beginFile(name: string, total: number, initial: number): void;
  /** `bytes` more bytes arrived (negative when a download restarts from zero). */
  advance(bytes: number): void;
  /** The current file is finished (or given up). */
  endFile(ok: boolean): void;
  /** A notice between files (cache hits, retries, fallbacks). */
  note(text: string): void;
}

export const silentProgress: ProgressSink = {
  beginFile() {},
  advance() {},
  endFile() {},
  note() {},
};

export function formatSize(n: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${Math.round(n)} B` : `${v.toFixed(1)} ${units[i]}`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  const mm = String(m).padStart(2, "0");
  const ss = String(r).padStart(2, "0");
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

interface Writable {
  write(s: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressOptions {
  /** Force terminal (redrawn bar) or plain-line output; default: the stream's isTTY. */
  tty?: boolean;
  /** Clock in ms, for tests. */
  now?: () => number;
  /** Plain mode: seconds between progress lines for one file (default 10). */
  lineIntervalS?: number;
}

/** Speed over the last few seconds, so that a stall shows as a falling rate. */
class RateMeter {
  private samples: Array<[number, number]> = [];
  constructor(private readonly windowMs = 5000) {}
  add(t: number, total: number): void {
    this.samples.push([t, total]);
    while (this.samples.length > 2 && t - this.samples[0]![0] > this.windowMs) this.samples.shift();
  }
  rate(): number {
    if (this.samples.length < 2) return 0;
    const [t0, b0] = this.samples[0]!;
    const [t1, b1] = this.samples[this.samples.length - 1]!;
    return t1 > t0 ? ((b1 - b0) * 1000) / (t1 - t0) : 0;
  }
}

/** A ProgressSink that draws on `stream` (normally process.stderr). */
export class StreamProgress implements ProgressSink {
  private readonly tty: boolean;
  private readonly now: () => number;
  private readonly lineIntervalMs: number;
  private name = "";
  private total = 0;
  private done = 0;
  private initial = 0;
  private startedAt = 0;
  private lastDraw = 0;
  private lastLine = 0;
  private drawn = false;
  private meter = new RateMeter();

  constructor(
    private readonly stream: Writable,
    options: ProgressOptions = {},
  ) {
    this.tty = options.tty ?? stream.isTTY === true;
    this.now = options.now ?? (() => Date.now());
    this.lineIntervalMs = (options.lineIntervalS ?? 10) * 1000;
  }

  beginFile(name: string, total: number, initial: number): void {
    this.name = name;
    this.total = total;
    this.done = initial;
    this.initial = initial;
    this.startedAt = this.now();
    this.lastDraw = 0;
    this.lastLine = this.startedAt;
    this.meter = new RateMeter();
    this.meter.add(this.startedAt, initial);
    if (this.tty) this.draw(true);
    else {
      const resumed = initial > 0 ? `, resuming at ${formatSize(initial)}` : "";
      this.stream.write(`downloading ${name} (${formatSize(total)}${resumed})\n`);
    }
  }

  advance(bytes: number): void {
    this.done += bytes;
    const t = this.now();
    this.meter.add(t, this.done);
    if (this.tty) {
      if (t - this.lastDraw >= 100) this.draw(false);
    } else if (t - this.lastLine >= this.lineIntervalMs) {
      this.lastLine = t;
      this.stream.write(`  ${this.name}: ${this.status()}\n`);
    }
  }

  endFile(ok: boolean): void {
    const elapsed = (this.now() - this.startedAt) / 1000;
    const got = this.done - this.initial;
    const avg = elapsed > 0 ? got / elapsed : 0;
    const summary = ok
      ? `${this.name}: ${formatSize(this.done)} in ${elapsed.toFixed(1)} s${avg > 0 ? ` (${formatSize(avg)}/s)` : ""}`
      : `${this.name}: stopped at ${formatSize(this.done)} of ${formatSize(this.total)}`;
    if (this.tty) {
      this.clearLine();
      this.stream.write(`${ok ? "✓" : "✗"} ${summary}\n`);
    } else {
      this.stream.write(`  ${ok ? "done" : "failed"}: ${summary}\n`);
    }
    this.drawn = false;
  }

  note(text: string): void {
    if (this.tty && this.drawn) this.clearLine();
    this.stream.write(`${text}\n`);
    if (this.tty && this.drawn) this.draw(true);
  }

  private status(): string {
    const rate = this.meter.rate();
    const pct = this.total > 0 ? Math.min(100, (100 * this.done) / this.total) : 100;
    const left = rate > 0 ? (this.total - this.done) / rate : NaN;
    return `${pct.toFixed(0).padStart(3)}% ${formatSize(this.done)}/${formatSize(this.total)} ${formatSize(rate)}/s ${formatDuration(left)} left`;
  }

  private clearLine(): void {
    this.stream.write("\r\x1b[K");
  }

  private draw(force: boolean): void {
    const t = this.now();
    if (!force && t - this.lastDraw < 100) return;
    this.lastDraw = t;
    const width = Math.max(10, Math.min(30, (this.stream.columns ?? 80) - 70));
    const frac = this.total > 0 ? Math.min(1, this.done / this.total) : 1;
    const fill = Math.round(frac * width);
    const bar = `[${"#".repeat(fill)}${".".repeat(width - fill)}]`;
    const name = this.name.length > 28 ? `…${this.name.slice(-27)}` : this.name;
    this.clearLine();
    this.stream.write(`${name} ${bar} ${this.status()}`);
    this.drawn = true;
  }
}

/** The default sink: stderr, redrawn on a terminal and plain lines otherwise. */
export function stderrProgress(): ProgressSink {
  return new StreamProgress(process.stderr);
}
