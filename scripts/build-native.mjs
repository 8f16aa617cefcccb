#!/usr/bin/env node
// Builds the native kernels (build/Release/smolvlm_native.node) with node-gyp, against the Node
// headers installed beside this node binary, so nothing is downloaded. Run by `npm install` /
// `npm ci` (the "install" script) and by hand: `node scripts/build-native.mjs`.
//
// A failed build is not fatal: it prints a warning and exits 0, and the engine uses the
// TypeScript kernels. Set SMOLVLM_REQUIRE_NATIVE=1 (or pass --strict) to make it fatal, or
// SMOLVLM_SKIP_NATIVE=1 to skip the build.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const strict = process.argv.includes("--strict") || process.env.SMOLVLM_REQUIRE_NATIVE === "1";

function warn(message) {
  console.warn(`smolvlm: native kernels not built: ${message}`);
  console.warn("smolvlm: the TypeScript kernels will be used (correct, much slower). Run `node scripts/build-native.mjs` to retry.");
  process.exit(strict ? 1 : 0);
}

if (process.env.SMOLVLM_SKIP_NATIVE === "1") {
  console.log("smolvlm: SMOLVLM_SKIP_NATIVE=1, not building the native kernels");
  process.exit(0);
}

function findNodeGyp() {
  const candidates = [];
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  // npm's own copy, next to this node binary (/usr/bin/node -> /usr/lib/node_modules/npm/...).
  const prefix = resolve(dirname(process.execPath), "..");
  candidates.push(join(prefix, "lib", "node_modules", "npm", "node_modules", "node-gyp", "bin", "node-gyp.js"));
  candidates.push(join(dirname(process.execPath), "node_modules", "npm", "node_modules", "node-gyp", "bin", "node-gyp.js"));
  try {
    candidates.push(createRequire(import.meta.url).resolve("node-gyp/bin/node-gyp.js"));
  } catch {
    // not installed locally
  }
  return candidates.find((p) => existsSync(p));
}

function findNodeDir() {
  if (process.env.npm_config_nodedir && existsSync(join(process.env.npm_config_nodedir, "include", "node", "node_api.h"))) {
    return process.env.npm_config_nodedir;
  }
  const prefix = resolve(dirname(process.execPath), "..");
  if (existsSync(join(prefix, "include", "node", "node_api.h"))) return prefix;
  return undefined;
}

const nodeGyp = findNodeGyp();
if (!nodeGyp) warn("node-gyp was not found (it ships with npm)");
const nodedir = findNodeDir();
const args = [nodeGyp, "rebuild", "--jobs=max"];
if (nodedir) {
  args.push(`--nodedir=${nodedir}`);
} else {
  console.warn("smolvlm: no Node headers found beside the node binary; node-gyp may try to download them");
}
const result = spawnSync(process.execPath, args, { cwd: root, stdio: "inherit", env: process.env });
if (result.error) warn(result.error.message);
if (result.status !== 0) warn(`node-gyp exited with status ${result.status} (is a C++17 compiler installed?)`);
const addon = join(root, "build", "Release", "smolvlm_native.node");
if (!existsSync(addon)) warn(`${addon} is missing after the build`);
console.log(`smolvlm: built ${addon}`);
