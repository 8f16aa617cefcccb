#!/usr/bin/env python3
"""Reads the stderr of one `llama-mtmd-cli --perf --log-timestamps -lv 4` run (and, if given,
the `/usr/bin/time -v` report appended to it) and prints one JSON line with:

  load_ms        process start to the CLI being ready (the "experimental CLI" warning, printed
                 after the text model, its warm-up and the mmproj are loaded)
  tiles          number of image slices encoded ("mtmd batch encoding done" lines)
  image_tokens   tokens the slices put into the text model (sum of n_tokens_batch)
  vision_ms      sum of the per-slice encode times (SigLIP + connector, libmtmd)
  image_prefill_ms  sum of the per-slice text-model decodes of the image tokens
  prompt_tokens, prompt_eval_ms  from llama_perf_context_print (note: its prompt eval time
                 also covers the vision encoding that happens between the text decodes)
  ttft_ms        ready -> first token: (time of the perf print) - (eval time) - (ready time);
                 includes reading and slicing the image, vision, all prefill, first sample
  decode_tokens_per_s  llama_perf's eval tokens/s (N-1 decode steps after the first token)
  peak_rss_mb    "Maximum resident set size" from /usr/bin/time -v, or a "peak_rss_kb=" line
"""
import json
import re
import sys

TS = re.compile(r"^(\d+)\.(\d+)\.(\d+)\.(\d+) ")


def ts_ms(line):
    m = TS.match(line)
    if not m:
        return None
    mi, s, ms, us = (int(x) for x in m.groups())
    return mi * 60000 + s * 1000 + ms + us / 1000.0


def main(path):
    text = open(path, errors="replace").read().splitlines()
    r = {"tiles": 0, "image_tokens": 0, "vision_ms": 0.0, "image_prefill_ms": 0.0}
    t_ready = t_perf = None
    enc = []
    for line in text:
        if "experimental CLI" in line and t_ready is None:
            t_ready = ts_ms(line)
        m = re.search(r"mtmd batch encoding done in (\d+) ms", line)
        if m:
            r["tiles"] += 1
            r["vision_ms"] += float(m.group(1))
            enc.append(int(m.group(1)))
        m = re.search(r"n_tokens_batch = (\d+)", line)
        if m:
            r["image_tokens"] += int(m.group(1))
        m = re.search(r"image decoded \(batch [^)]*\) in (\d+) ms", line)
        if m:
            r["image_prefill_ms"] += float(m.group(1))
        m = re.search(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens", line)
        if m:
            r["prompt_eval_ms"] = float(m.group(1))
            r["prompt_tokens"] = int(m.group(2))
            t_perf = ts_ms(line)
        m = re.search(r"\seval time =\s*([\d.]+) ms /\s*(\d+) runs.*?([\d.]+) tokens per second", line)
        if m and "prompt" not in line:
            r["eval_ms"] = float(m.group(1))
            r["eval_runs"] = int(m.group(2))
            r["decode_tokens_per_s"] = float(m.group(3))
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", line)
        if m:
            r["peak_rss_mb"] = round(int(m.group(1)) / 1024.0, 1)
        m = re.search(r"peak_rss_kb=(\d+)", line)
        if m:
            r["peak_rss_mb"] = round(int(m.group(1)) / 1024.0, 1)
        m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", line)
        if m:
            parts = [float(p) for p in m.group(1).split(":")]
            secs = 0.0
            for p in parts:
                secs = secs * 60 + p
            r["wall_s"] = round(secs, 1)
    if t_ready is not None:
        r["load_ms"] = round(t_ready, 1)
    if t_ready is not None and t_perf is not None and "eval_ms" in r:
        r["ttft_ms"] = round(t_perf - r["eval_ms"] - t_ready, 1)
    r["vision_ms_per_tile"] = round(r["vision_ms"] / r["tiles"], 1) if r["tiles"] else None
    r["vision_ms_per_tile_list"] = enc
    print(json.dumps(r))


if __name__ == "__main__":
    main(sys.argv[1])
