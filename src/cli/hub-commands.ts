/**
 * `smolvlm pull`, `smolvlm ls` and `smolvlm rm`: the Hugging Face Hub cache from the command line. Results go to
 * stdout (pull: the snapshot folder; ls: the table or JSON); progress and notices go to stderr.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { SmolVLMError } from "../errors.js";
import { hubEnv, isRepoId, listCachedModels, removeCachedModel, type CachedModel } from "../hub/cache.js";
import { formatSize, StreamProgress } from "../hub/progress.js";
import { pullModel } from "../hub/resolve.js";

export const HUB_USAGE = `  smolvlm pull REPO_ID[@REVISION] [--no-verify] [--quiet]
  smolvlm ls [--json]
  smolvlm rm REPO_ID...

hub commands:
  pull    download a model's inference files (config, tokenizer and processor files, chat template,
          safetensors weights) into the Hugging Face cache, or check and repair a cached copy;
          prints the snapshot folder. REVISION is a branch, a tag or a 40-hex commit (default main)
  ls      list the models in the cache with their sizes and revisions
  rm      remove models from the cache
  The cache is huggingface_hub's ($HF_HUB_CACHE, default $HF_HOME/hub, default ~/.cache/huggingface/hub);
  HF_ENDPOINT, HF_TOKEN (or the file $HF_HOME/token) and HF_HUB_OFFLINE=1 are honoured.
`;

const PULL_OPTIONS = {
  "no-verify": { type: "boolean" },
  quiet: { type: "boolean", short: "q" },
  help: { type: "boolean", short: "h" },
} satisfies ParseArgsConfig["options"];

const LS_OPTIONS = {
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} satisfies ParseArgsConfig["options"];

const RM_OPTIONS = {
  help: { type: "boolean", short: "h" },
} satisfies ParseArgsConfig["options"];

class HubUsageError extends Error {}

/** Where a command reads its environment and writes its output (tests pass their own). */
export interface CommandIO {
  env: NodeJS.ProcessEnv;
  stdout: { write(s: string): unknown; isTTY?: boolean; columns?: number };
  stderr: { write(s: string): unknown; isTTY?: boolean; columns?: number };
}

const processIO = (): CommandIO => ({ env: process.env, stdout: process.stdout, stderr: process.stderr });

/** Runs a command body with the CLI's error conventions: usage problems exit 2, user errors exit 1. */
async function guarded(io: CommandIO, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (e) {
    const parseError = e instanceof TypeError && (e as NodeJS.ErrnoException).code?.startsWith("ERR_PARSE_ARGS");
    if (e instanceof HubUsageError || parseError) {
      io.stderr.write(`smolvlm: ${(e as Error).message}\n\nusage:\n${HUB_USAGE}`);
      return 2;
    }
    if (e instanceof SmolVLMError) {
      io.stderr.write(`smolvlm: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}

/** `smolvlm pull REPO_ID[@REV]`: downloads what is missing, re-hashes what is cached, prints the folder. */
export function pull(args: string[], io: CommandIO = processIO()): Promise<number> {
  return guarded(io, async () => {
    const { values: v, positionals } = parseArgs({ args, options: PULL_OPTIONS, strict: true, allowPositionals: true });
    if (v.help) {
      io.stdout.write(`usage:\n${HUB_USAGE}`);
      return 0;
    }
    if (positionals.length !== 1) throw new HubUsageError("pull takes one REPO_ID[@REVISION]");
    const ref = positionals[0]!;
    const result = await pullModel(ref, { env: io.env, verify: !v["no-verify"], progress: v.quiet ? false : new StreamProgress(io.stderr) });
    if (!v.quiet) {
      const parts = [`${result.downloaded.length} downloaded (${formatSize(result.downloadedBytes)})`, `${result.cached.length} already cached`];
      if (result.repaired.length > 0) parts.push(`${result.repaired.length} repaired (${result.repaired.join(", ")})`);
      const where = result.fromCacheOnly ? "from the cache only" : parts.join(", ");
      io.stderr.write(`${result.repoId}@${result.revision} is commit ${result.commit}: ${where}\n`);
    }
    io.stdout.write(`${result.path}\n`);
    return 0;
  });
}

function refsOf(m: CachedModel): string {
  const names = m.revisions.map((r) => (r.refs.length > 0 ? r.refs.join(",") : r.commit.slice(0, 12)));
  return names.length > 0 ? names.join(" ") : "-";
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + " ".repeat(n - s.length);
}

/** `smolvlm ls`: the cached models, their sizes and revisions. */
export function ls(args: string[], io: CommandIO = processIO()): Promise<number> {
  return guarded(io, async () => {
    const { values: v, positionals } = parseArgs({ args, options: LS_OPTIONS, strict: true, allowPositionals: true });
    if (v.help) {
      io.stdout.write(`usage:\n${HUB_USAGE}`);
      return 0;
    }
    if (positionals.length > 0) throw new HubUsageError("ls takes no arguments");
    const env = hubEnv(io.env);
    const models = listCachedModels(env.cacheDir);
    if (v.json) {
      io.stdout.write(
        JSON.stringify({
          cache_dir: env.cacheDir,
          models: models.map((m) => ({
            repo_id: m.repoId,
            path: m.path,
            size: m.size,
            incomplete_size: m.incompleteSize,
            last_modified: m.lastModified.toISOString(),
            revisions: m.revisions.map((r) => ({ commit: r.commit, refs: r.refs, files: r.files, size: r.size, path: r.path })),
          })),
        }) + "\n",
      );
      return 0;
    }
    if (models.length === 0) {
      io.stdout.write(`no models in the cache (${env.cacheDir})\n`);
      return 0;
    }
    const rows = models.map((m) => [
      m.repoId,
      formatSize(m.size) + (m.incompleteSize > 0 ? ` (+${formatSize(m.incompleteSize)} partial)` : ""),
      refsOf(m),
      m.lastModified.toISOString().slice(0, 16).replace("T", " "),
    ]);
    const head = ["REPO ID", "SIZE", "REVISIONS", "MODIFIED"];
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : pad(c, widths[i]!))).join("  ") + "\n";
    io.stdout.write(line(head));
    for (const r of rows) io.stdout.write(line(r));
    const total = models.reduce((a, m) => a + m.size, 0);
    io.stdout.write(`\n${models.length} model${models.length === 1 ? "" : "s"}, ${formatSize(total)} in ${env.cacheDir}\n`);
    return 0;
  });
}

/** `smolvlm rm REPO_ID...`: removes models (all their revisions) from the cache. */
export function rm(args: string[], io: CommandIO = processIO()): Promise<number> {
  return guarded(io, async () => {
    const { values: v, positionals } = parseArgs({ args, options: RM_OPTIONS, strict: true, allowPositionals: true });
    if (v.help) {
      io.stdout.write(`usage:\n${HUB_USAGE}`);
      return 0;
    }
    if (positionals.length === 0) throw new HubUsageError("rm takes at least one REPO_ID");
    for (const id of positionals) {
      if (id.includes("@")) throw new HubUsageError(`rm removes whole models: give ${id.split("@")[0]} without @revision`);
      if (!isRepoId(id)) throw new HubUsageError(`"${id}" is not a repo id (expected org/name)`);
    }
    const env = hubEnv(io.env);
    let status = 0;
    for (const id of positionals) {
      try {
        const removed = removeCachedModel(env.cacheDir, id);
        io.stdout.write(`removed ${id} (${formatSize(removed.size + removed.incompleteSize)})\n`);
      } catch (e) {
        if (!(e instanceof SmolVLMError)) throw e;
        io.stderr.write(`smolvlm: ${e.message}\n`);
        status = 1;
      }
    }
    return status;
  });
}
